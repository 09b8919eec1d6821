"""The MQTT topic table: every topic under `tilefleet/<fleet>/`, tied to its payload type."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_FLEET = "default"
ROOT = "tilefleet"

# topic suffix -> (payload type name in node.wire.messages, retained?)
NODE_TOPICS = {
    "status": ("Status", True),        # online/offline; offline is the Last Will
    "resources": ("Resources", True),  # board facts, runtime, endpoints, speed
    "metrics": ("Metrics", False),     # periodic per-stage figures and error counters
    "cmd": ("Command", False),         # commands to the node (see messages.COMMANDS)
    "replies": ("Reply", False),       # replies to commands whose reply_to is unreadable
}


@dataclass(frozen=True)
class Topics:
    """Topic names for one fleet; `node(id, suffix)` builds a node topic."""

    fleet: str = DEFAULT_FLEET

    @property
    def prefix(self) -> str:
        return f"{ROOT}/{self.fleet}/"

    def node(self, node_id: str, suffix: str) -> str:
        if suffix not in NODE_TOPICS:
            raise ValueError(f"unknown node topic {suffix!r}")
        return f"{self.prefix}nodes/{node_id}/{suffix}"

    def status(self, node_id: str) -> str:
        return self.node(node_id, "status")

    def resources(self, node_id: str) -> str:
        return self.node(node_id, "resources")

    def metrics(self, node_id: str) -> str:
        return self.node(node_id, "metrics")

    def cmd(self, node_id: str) -> str:
        return self.node(node_id, "cmd")

    def replies(self, node_id: str) -> str:
        return self.node(node_id, "replies")

    def all_nodes(self, suffix: str) -> str:
        """Wildcard subscription for one suffix on every node, e.g. all statuses."""
        return f"{self.prefix}nodes/+/{suffix}"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """'tilefleet/f/nodes/<id>/<suffix>' -> (id, suffix); None for other topics."""
        if not topic.startswith(self.prefix):
            return None
        parts = topic[len(self.prefix):].split("/")
        if len(parts) != 3 or parts[0] != "nodes" or parts[2] not in NODE_TOPICS:
            return None
        return parts[1], parts[2]
