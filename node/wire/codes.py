"""Every error code of the wire contract, with whether a retry may succeed.

A code travels as a plain string: in a command `Reply.code`, a data-plane error message
(`error.code`), a service reply (`code`), and as a key of `Metrics.errors`. `Code` is a
`StrEnum`, so a member *is* that string (`Code.BUSY == "busy"`, JSON-encodes as "busy")
and older peers see no difference. `transient` marks the codes a client retries: the
request may succeed once a stage drains, a re-plan finishes or a restarted node is back;
any other code is the request's (or the deployment's) fault. `node/README_WIRE.md`
documents every member; `tests/node/test_wire_contract.py` checks it does.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    """One error code: its wire string, `transient` (worth a retry) and `meaning`."""

    transient: bool
    meaning: str

    def __new__(cls, value: str, transient: bool, meaning: str) -> Code:
        member = str.__new__(cls, value)
        member._value_ = value
        member.transient = transient
        member.meaning = meaning
        return member

    # ---- malformed messages (data plane, control plane, service socket) -----------
    BAD_COMMAND = ("bad_command", False,
                   "a command payload that is not JSON, of an unknown type or with an "
                   "invalid field")
    BAD_VERSION = "bad_version", False, "a message whose `v` this node does not speak"
    BAD_HEADER = ("bad_header", False,
                  "a data or service header that is not a JSON object or has a bad field")
    BAD_FRAME = ("bad_frame", False,
                 "a multipart message with missing or extra frames, or an empty one")
    BAD_DTYPE = "bad_dtype", False, "a tensor dtype the wire does not carry"
    BAD_SHAPE = ("bad_shape", False,
                 "a tensor shape or region that is inconsistent or outside the tensor")
    SIZE_MISMATCH = ("size_mismatch", False,
                     "a tensor frame whose byte count is not prod(shape) * itemsize")
    OVERSIZED = ("oversized", False,
                 "a header, payload, message or upload over its size limit")
    BAD_KIND = "bad_kind", False, "a node received a data-plane message other than `data`"
    BAD_REQUEST = ("bad_request", False,
                   "a service request with a missing or mistyped field")
    BAD_MESSAGE = ("bad_message", False,
                   "a malformed message not covered by a more specific code")
    # ---- deployments and stages ---------------------------------------------------
    UNKNOWN_DEPLOYMENT = ("unknown_deployment", True,
                          "a message for a deployment this node does not run (yet)")
    UNKNOWN_EPOCH = ("unknown_epoch", True,
                     "a message for an epoch this node does not hold (switching epochs)")
    UNKNOWN_STAGE = ("unknown_stage", True,
                     "a message for a stage this node does not run in that epoch")
    MISSING_PARTS = ("missing_parts", False,
                     "deploy or profile of parts not in the store (`result.missing`)")
    MISSING_PART = "missing_part", False, "a part looked up in the store is not there"
    BAD_STAGE = ("bad_stage", False,
                 "a stage spec that does not match its part (inputs, dtypes, shapes, routes)")
    BAD_PART = "bad_part", False, "a part the runtime cannot load or allocate"
    MEMORY_BUDGET = ("memory_budget", False,
                     "a load that would take the node over its memory budget (see Epochs)")
    WRONG_TENSOR = ("wrong_tensor", False,
                    "a piece of a tensor the stage does not take, or that misses its window")
    RUN_FAILED = "run_failed", False, "the interpreter raised while running a stage"
    INCOMPLETE = ("incomplete", True,
                  "a request's pieces did not arrive (expired after 30 s) or did not cover "
                  "the window")
    EVICTED = ("evicted", True,
               "an incomplete request dropped because too many were pending (64)")
    # ---- part store and upload ----------------------------------------------------
    SHA256_MISMATCH = ("sha256_mismatch", False,
                       "an uploaded or stored part whose bytes do not hash to its name")
    OUT_OF_ORDER = ("out_of_order", False,
                    "an upload chunk at another offset than expected (`expected`)")
    BAD_UPLOAD = "bad_upload", False, "an upload with a bad sha256, size or offset"
    # ---- sending and load ---------------------------------------------------------
    SEND_TIMEOUT = ("send_timeout", True,
                    "a message that could not leave within 10 s (receiver gone or full)")
    SEND_FAILED = "send_failed", True, "a send that failed outright (socket error)"
    NO_REPLY = ("no_reply", True,
                "a result for the client, but the request names no reply endpoint")
    BUSY = "busy", True, "the node's command queue is full"
    COMMAND_TIMEOUT = ("command_timeout", False,
                       "a probe or profile that did not finish within its time limit on the "
                       "node (60 s, 300 s)")
    # ---- the node itself ----------------------------------------------------------
    INTERNAL = "internal", False, "an unexpected failure inside the agent (it keeps running)"
    ERROR = "error", False, "an error without a more specific code"
    NO_RUNTIME = "no_runtime", False, "no TFLite runtime could be imported"
    STORE = "store", False, "the part store failed (other than a missing or bad part)"
    THREAD_RESTART = ("thread_restart", False,
                      "a thread of the agent died and was started again (counted in "
                      "metrics, never sent)")
    STORE_FULL = ("store_full", False,
                  "an upload that would take the part store over `store_limit_mb`, or "
                  "beyond 16 uploads in progress")
    CONFIG = "config", False, "a board file or command-line setting that is invalid"
    DEPLOY = "deploy", False, "a deployment that cannot be loaded (other causes)"
    BIND = "bind", False, "the agent could not bind its data or service port"
    # ---- raised by the client, never sent by a node -------------------------------
    TIMEOUT = ("timeout", True,
               "no reply or result within the time-out (client side)")
    OFFLINE = ("offline", False,
               "the node went offline (its Last Will) before it replied (client side)")
    CLOSED = "closed", False, "the client closed while the request waited (client side)"
    RETIRE_FAILED = ("retire_failed", False,
                     "a node short of memory did not retire its older epochs to load the new "
                     "one (client side)")
    UNSENT = ("unsent", True,
              "an attempt that could not leave the client; counted, sent again (client side)")


def is_transient(code: str) -> bool:
    """Whether a request that failed with `code` (any string off the wire) is worth a retry."""
    try:
        return Code(code).transient
    except ValueError:  # a code this side does not know (a newer peer): not retried
        return False
