"""The script cache emptied at the worst moment, right before each EVALSHA (what a SCRIPT
FLUSH or a restart mid-run can do): every call still succeeds, through EVAL."""

from __future__ import annotations

from typing import Any

import redis

from pyqcore import BaseQueue
from tests.support import LocalRedis


class FlushingBeforeEvalsha(redis.Redis):
    """A real client that empties the script cache right before every EVALSHA (the worst
    place for a SCRIPT FLUSH or a restart to land; every command goes to the real server)."""

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        self.script_flush()
        return super().evalsha(sha, numkeys, *keys_and_args)


def test_a_flush_before_every_evalsha_is_survived(plain_server: LocalRedis) -> None:
    client = FlushingBeforeEvalsha(host="127.0.0.1", port=plain_server.port)
    queue = BaseQueue(client, name="flush")
    assert queue.add("x") == "1"  # EVALSHA -> NOSCRIPT -> EVAL with the source
    [job] = queue.reserve()
    assert job.payload == "x"
    assert queue.ack(job) == 1
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
    client.close()
