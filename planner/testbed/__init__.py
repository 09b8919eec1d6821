"""Emulated boards on one machine: namespaces, shaped and delayed links, CPU quotas.

`with Testbed(make_spec("rpi3:4,edge_server:1")) as tb:` gives `tb.broker_url` and
`tb.nodes` (planner/testbed/testbed.py); `tilefleet testbed up|status|down|cleanup` is
the command line (planner/commands/testbed.py). Layer: like planner/local (may import
fleet and local); nothing below imports it.
"""

from planner.testbed.cleanup import cleanup, down, leftovers
from planner.testbed.spec import LinkSpec, TestbedError, TestbedSpec, make_spec
from planner.testbed.testbed import Testbed, TestbedNode

__all__ = ["LinkSpec", "Testbed", "TestbedError", "TestbedNode", "TestbedSpec", "cleanup",
           "down", "leftovers", "make_spec"]
