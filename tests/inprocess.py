"""A server and a client in one process: the real Pyro5 objects and data-channel session of
dacbench_remote.server, reached through stand-ins for Pyro5 and the data socket."""

from __future__ import annotations

import json
import threading
from typing import Any

from dacbench_remote.host.client import ServerConnection, unwrap_reply
from dacbench_remote.server.control import RemoteRunnerServer
from dacbench_remote.server.data_channel import DataSession
from dacbench_remote.wire import codec
from dacbench_remote.wire.channel import RUNNER_OBJECT_ID, LoopbackChannel


class InProcessServer:
    """A RemoteRunnerServer in this process, and the part of a Pyro5 daemon it uses."""

    def __init__(self):
        self.objects: dict[str, Any] = {}
        self.runner = RemoteRunnerServer(self, on_shutdown=lambda: None)
        self.register(self.runner, RUNNER_OBJECT_ID)

    def register(self, obj: Any, objectId: str) -> str:  # Pyro5 names it objectId
        self.objects[objectId] = obj
        return f"PYRO:{objectId}@./u:in-process"

    def unregister(self, obj: Any) -> None:
        for object_id, registered in list(self.objects.items()):
            if registered is obj:
                del self.objects[object_id]


class InProcessConnection(ServerConnection):
    """A ServerConnection whose control calls are method calls on the server's objects (their
    arguments and replies made to cross JSON, as Pyro5's serializer would) and whose data
    channels are LoopbackChannels into a DataSession of the same server."""

    def __init__(self, server: InProcessServer, wire_version: int = codec.WIRE_VERSION):
        self.server = server
        self.socket_path = "in-process"
        self.timeout = 5.0
        self.describe_crash = lambda: ""
        self._lock = threading.Lock()
        self._proxy = self.proxy(RUNNER_OBJECT_ID)
        self.server_facts = self.call(self._proxy, "hello", wire_version)

    def proxy(self, object_id_or_uri: str) -> Any:
        object_id = object_id_or_uri.removeprefix("PYRO:").partition("@")[0]
        return self.server.objects[object_id]

    def call(self, proxy: Any, method: str, *args: Any) -> Any:
        args = json.loads(json.dumps(args))
        return unwrap_reply(json.loads(json.dumps(getattr(proxy, method)(*args))))

    def release(self, proxy: Any) -> None:
        pass

    def open_channel(self) -> LoopbackChannel:
        return LoopbackChannel(DataSession(self.server.runner.environments).answer)
