"""Records are plain MessagePack: Lua's cmsgpack inside Redis reads what pyqcore writes."""

from __future__ import annotations

import json

import redis

from pyqcore.serializer import dumps

# Round-trips a value through cmsgpack and reports what Lua saw, as JSON text.
LUA_DECODE = "return cjson.encode(cmsgpack.unpack(ARGV[1]))"


def test_redis_lua_cmsgpack_decodes_our_encoding(client: redis.Redis) -> None:
    payload = {"user_id": 123456, "email": "user123456@example.com", "template": "welcome",
               "vars": {"name": "User 123456", "plan": "pro", "tags": ["a", "b", "c"],
                        "score": 0.75, "big": 2**40, "neg": -7, "none_here": False}}
    seen = client.eval(LUA_DECODE, 0, dumps(payload))
    assert isinstance(seen, bytes)
    assert json.loads(seen) == payload
