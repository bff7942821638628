"""Training workloads: dense transformer models and one simulated training step on a fabric."""

from fabricsim.training.layout import Layout, RankGroups, rank_groups
from fabricsim.training.models import MODELS, Model, load_model, model_preset, resolve_model
from fabricsim.training.step import (check_memory, DEFAULT_BUCKET, DEFAULT_MFU, StepConfig, StepLayout, StepResult, simulate_step,
                                     step_layout, write_step_trace)

__all__ = ["Layout", "RankGroups", "rank_groups", "MODELS", "Model", "load_model", "model_preset", "resolve_model", "DEFAULT_BUCKET", "DEFAULT_MFU",
           "check_memory", "StepConfig", "StepLayout", "StepResult", "simulate_step", "step_layout", "write_step_trace"]
