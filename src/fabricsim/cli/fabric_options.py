"""The options that size and shape a preset fabric, the same on every command that builds one.

``--planes``, ``--network`` and ``--oversubscription`` shape the NVLink domain and the fat tree; ``--nic``,
``--switch``, ``--network-kind``, ``--net-latency``, ``--sharp/--no-sharp`` and
``--adaptive-routing/--static-routing`` reach the scale-out builder's remaining arguments
(``topologies.scaleout.scale_out``), so a user can reproduce a measured fabric (say, 800G XDR NICs under
Quantum-X800 switches with adaptive routing) from the command line. The command receives one dict,
``fabric``, of the options given; a preset that takes none of them refuses it in one line
(``topologies.io.build``), and a topology file refuses them all.
"""

from __future__ import annotations

import functools

import click

from fabricsim.cli.params import OVERSUBSCRIPTION, _Parsed
from fabricsim.hardware import LINKS, NETWORK_KINDS, SWITCHES

__all__ = ["preset_options"]


class _Time(_Parsed):
    """A latency: ``1.5us``, ``800ns``, or seconds; at most one second (a NIC traversal, not a timeout)."""

    name = "time"

    def _parse(self, value: str) -> float:
        from fabricsim.units import parse_time

        t = parse_time(value)
        if t > 1.0:
            raise click.BadParameter(f"{value!r} is more than one second")
        return t


_NICS = sorted(k for k in LINKS if not k.startswith(("nvlink", "pcie")))
_SWITCHES = sorted(k for k in SWITCHES if not k.startswith(("nvswitch", "nvlink")))


def preset_options(command):
    """Add the fabric options; the command gets ``fabric``: a dict of those given (for ``resolve``)."""
    @click.option("--planes", type=click.Choice(["per-chip", "aggregate"]), default=None,
                  help="NVL72 switch chips one by one or as one crossbar.")
    @click.option("--network", type=click.Choice(["rail", "fat-tree"]), default=None,
                  help="Scale-out presets: rail-optimised or plain fat tree.")
    @click.option("--oversubscription", type=OVERSUBSCRIPTION, default=None,
                  help="Scale-out presets: leaf down:up bandwidth ratio.")
    @click.option("--nic", type=click.Choice(_NICS), default=None, help="Scale-out presets: NIC kind.")
    @click.option("--switch", type=click.Choice(_SWITCHES), default=None,
                  help="Scale-out presets: network switch model (radix, port rate, latency).")
    @click.option("--network-kind", type=click.Choice(sorted(NETWORK_KINDS)), default=None,
                  help="Scale-out presets: latency character of the network.")
    @click.option("--net-latency", type=_Time(), default=None,
                  help="Scale-out presets: one NIC traversal (e.g. 2us), overriding --network-kind's.")
    @click.option("--sharp/--no-sharp", default=None,
                  help="Scale-out presets: whether the network switches reduce (SHARP) [default: as the switch "
                       "model does].")
    @click.option("--adaptive-routing/--static-routing", "adaptive_routing", default=None,
                  help="Scale-out presets: switches spread every flow over all shortest next hops, or hash it "
                       "onto one (static ECMP) [default: static].")
    @functools.wraps(command)
    def wrapper(*args, planes, network, oversubscription, nic, switch, network_kind, net_latency, sharp,
                adaptive_routing, **kwargs):
        given = dict(planes=planes, network=network, oversubscription=oversubscription, nic=nic, switch=switch,
                     network_kind=network_kind, net_latency=net_latency, sharp=sharp,
                     adaptive_routing=adaptive_routing)
        return command(*args, fabric={k: v for k, v in given.items() if v is not None}, **kwargs)
    return wrapper
