"""The real hat-juggler 0.7.6 client against a plexwire juggler server.

Usage: juggler_client.py URL [MAX_SEGMENT_SIZE]
Checks echo with its notify and state diffs, the empty-name echo, fail,
notify, a segmented unicode message and keep-alive; prints OK <checks> or
raises (non-zero exit).
"""
import asyncio
import sys

from hat import juggler


async def main(url, max_segment_size):
    notifies = []
    client = await juggler.connect(
        url,
        notify_cb=lambda _c, name, data: notifies.append((name, data)),
        max_segment_size=max_segment_size,
        ping_delay=0.3,
        ping_timeout=5,
    )
    checks = 0

    async def until(cond, what):
        for _ in range(200):
            if cond():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}: state={client.state.data} notifies={notifies}")

    await until(lambda: client.state.data == {"counter": 0, "last": None, "items": [], "tick": 0}, "the initial state")
    checks += 1
    data = {"i": 0, "text": "message 0", "list": [0, 0], "nested": {"ok": True, "none": None}}
    assert await client.send("echo", data) == data
    assert notifies[-1] == ("echoed", data), notifies
    await until(lambda: client.state.data.get("counter") == 1 and client.state.data["items"] == [1] and client.state.data["last"] == data, "the echo's state diff")
    checks += 1
    assert await client.send("", {"x": [1, 2, 3]}) == {"x": [1, 2, 3]}
    checks += 1
    try:
        await client.send("fail", "boom")
        raise AssertionError("fail succeeded")
    except juggler.JugglerError as e:
        assert e.data == "requested failure: boom", e.data
    checks += 1
    assert await client.send("notify", {"name": "custom", "data": {"k": [1, "v"]}}) is None
    await until(lambda: ("custom", {"k": [1, "v"]}) in notifies, "the custom notify")
    checks += 1
    big = "é😀x" * 2000
    assert await client.send("echo", big) == big
    await until(lambda: client.state.data.get("last") == big, "the unicode state")
    checks += 1
    assert await client.send("set", {"path": ["last"], "value": {"k": [1, 2]}}) is True
    assert await client.send("set", {"path": ["last", "k", 1], "value": 5}) is True
    await until(lambda: client.state.data.get("last") == {"k": [1, 5]}, "the set's state diff")
    checks += 1
    # Idle for longer than ping_delay: the client pings, the server answers.
    await asyncio.sleep(1.0)
    assert client.is_open
    assert await client.send("state", None) == client.state.data
    checks += 1
    await client.async_close()
    print(f"OK {checks}")


asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 64 * 1024))
