"""Client API of a running fleet: `Fleet.connect(url)`, nodes, deploy, infer."""

from planner.errors import FleetError
from planner.fleet.client import Fleet
from planner.fleet.deployment import Deployment
from planner.fleet.nodes import NodeInfo
from planner.fleet.requests import RequestError

__all__ = ["Deployment", "Fleet", "FleetError", "NodeInfo", "RequestError"]
