"""Hardware presets against the published figures (row ids of shared/reference/published_figures.csv)."""

import dataclasses

import pytest

from fabricsim import hardware as hw
from fabricsim.errors import ConfigError


def test_nvlink_per_gpu_bandwidth_is_one_way():
    assert hw.NVLINK4.per_gpu_bandwidth == 450e9          # A007: 900 GB/s bidirectional
    assert hw.NVLINK5.bandwidth == 50e9                   # A003
    assert hw.NVLINK5.links_per_gpu == 18                 # A001
    assert hw.NVLINK5.per_gpu_bandwidth == 900e9          # A005
    assert 2 * hw.NVLINK5.per_gpu_bandwidth == 1.8e12     # A004


def test_nics_and_switches():
    assert hw.IB_NDR.bandwidth == 50e9                    # A027: 400 Gb/s
    assert hw.IB_XDR.bandwidth == 100e9                   # A028: 800 Gb/s
    assert hw.QUANTUM2_NDR.ports == 64                    # A030
    assert hw.NVSWITCH_GEN3.ports == 64                   # A009
    assert 2 * hw.NVLINK5_SWITCH_TRAY.capacity == 14.4e12  # A014: 14.4 TB/s per tray
    assert 2 * hw.NVLINK5_SWITCH.ports == hw.NVLINK5_SWITCH_TRAY.ports  # A013, A016


def test_gpu_flops():
    assert hw.H100.peak_flops("bf16") == 989e12           # A033
    assert hw.B200.peak_flops("FP8") == 4500e12           # A038
    assert hw.GB200.peak_flops("bf16") == 2500e12         # A039


@pytest.mark.parametrize("preset", list(hw.GPUS.values()) + list(hw.LINKS.values()) + list(hw.SWITCHES.values()))
def test_every_preset_names_its_source(preset):
    assert preset.source.strip()


def test_refusals():
    with pytest.raises(ConfigError, match="no 'fp4'"):
        hw.H100.peak_flops("fp4")
    with pytest.raises(ConfigError, match="known: b200"):
        hw.gpu_preset("A100")
    assert hw.gpu_preset("gb200") is hw.GB200


def test_presets_are_frozen_and_overridable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        hw.NVLINK5.latency = 0.0
    faster = dataclasses.replace(hw.NVLINK5, latency=1e-7)
    assert faster.latency == 1e-7 and hw.NVLINK5.latency != 1e-7
