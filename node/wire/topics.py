"""The MQTT topic table: every topic under `tilefleet/<fleet>/`, tied to its payload type.

`TOPICS` is the whole control-plane contract: the node topics the agent publishes and
listens on, the client's reply topic, and the deployment record and re-plan events the
planner publishes for other processes. Payload types are named, not imported: the node
types live in `node.wire.messages`; the record and re-plan types in the planner, which
the node never imports (`node/README_WIRE.md` lists the table; a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_FLEET = "default"
ROOT = "tilefleet"


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its pattern under the fleet prefix and what is published there."""

    pattern: str  # e.g. "nodes/{id}/status"; {…} is one topic level
    payload: str  # payload type: a name in node.wire.messages, or module.Type
    retained: bool
    meaning: str


TOPICS: dict[str, TopicSpec] = {
    "status": TopicSpec("nodes/{id}/status", "Status", True,
                        "online/offline; offline is the node's Last Will"),
    "resources": TopicSpec("nodes/{id}/resources", "Resources", True,
                           "board facts, runtime, endpoints, speed"),
    "metrics": TopicSpec("nodes/{id}/metrics", "Metrics", False,
                         "periodic per-stage figures and error counters"),
    "cmd": TopicSpec("nodes/{id}/cmd", "Command", False,
                     "commands to the node (see messages.COMMANDS)"),
    "replies": TopicSpec("nodes/{id}/replies", "Reply", False,
                         "replies to commands whose reply_to could not be read"),
    "client_replies": TopicSpec("clients/{id}/replies", "Reply", False,
                                "a client's own reply topic (the reply_to of its commands)"),
    "deployment": TopicSpec("deployments/{name}", "planner.fleet.record.Record", True,
                            "the deployment record; an empty payload clears it"),
    "replans": TopicSpec("deployments/{name}/replans", "planner.live.replanner.Replan",
                         False, "one event per live re-plan of the deployment"),
}

# node topic suffix -> (payload type name in node.wire.messages, retained?)
NODE_TOPICS = {k: (s.payload, s.retained) for k, s in TOPICS.items()
               if s.pattern.startswith("nodes/{id}/")}


@dataclass(frozen=True)
class Topics:
    """Topic names for one fleet; `node(id, suffix)` builds a node topic."""

    fleet: str = DEFAULT_FLEET

    @property
    def prefix(self) -> str:
        return f"{ROOT}/{self.fleet}/"

    def node(self, node_id: str, suffix: str) -> str:
        """A node topic, e.g. node("n1", "status")."""
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

    def client_replies(self, client_id: str) -> str:
        """The reply topic a client subscribes to and names in its commands."""
        return self.prefix + TOPICS["client_replies"].pattern.format(id=client_id)

    def deployment(self, name: str) -> str:
        """The retained record of deployment `name` ("+" subscribes to every record)."""
        return self.prefix + TOPICS["deployment"].pattern.format(name=name)

    def replans(self, name: str) -> str:
        """The re-plan events of deployment `name`."""
        return self.prefix + TOPICS["replans"].pattern.format(name=name)

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

    def parse_deployment(self, topic: str) -> str | None:
        """'tilefleet/f/deployments/<name>' -> name; None for any other topic."""
        head = self.deployment("")
        if not topic.startswith(head):
            return None
        name = topic[len(head):]
        return name if name and "/" not in name else None
