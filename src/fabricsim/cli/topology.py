"""``fabricsim topology``: list, inspect, export and draw fabric presets."""

import click


@click.group()
def topology() -> None:
    """Inspect the fabric presets."""
