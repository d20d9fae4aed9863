"""A dead Ray address is a kcrl error naming it within a bounded time; Ray is not asked to retry."""

import socket
import time

import pytest

from kcrl.errors import ClusterConnectionError, ConfigError, KcrlError


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@pytest.fixture
def fake_ray(monkeypatch):
    """Ray's init replaced: the test fails if kcrl asks Ray to connect to a dead address."""
    import kcrl.benchmarks.ray_backend as backend

    class FakeRay:
        calls = []

        @staticmethod
        def is_initialized():
            return False

        @staticmethod
        def init(**kwargs):
            FakeRay.calls.append(kwargs)
            pytest.fail("ray.init was called for an address that does not answer")

        @staticmethod
        def shutdown():
            pass

    monkeypatch.setattr(backend, "_import_ray", lambda: FakeRay)
    return FakeRay


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_a_dead_address_fails_fast_with_its_name(fake_ray, form):
    from kcrl.benchmarks.runner import map_tasks

    address = form.format(port=_dead_port())
    start = time.time()
    with pytest.raises(ClusterConnectionError) as info:
        map_tasks(abs, [1, 2], backend="ray", ray_address=address, show_progress=False)
    assert time.time() - start < 5 and isinstance(info.value, KcrlError)
    assert f"could not reach the Ray cluster at {address!r}" in str(info.value)
    assert "leave out --ray-address" in str(info.value) and fake_ray.calls == []


def test_an_unanswering_address_waits_at_most_the_timeout(fake_ray, monkeypatch):
    import kcrl.benchmarks.ray_backend as backend

    def hangs(endpoint, timeout):
        time.sleep(min(timeout, 0.2))
        raise TimeoutError("timed out")

    monkeypatch.setattr(backend.socket, "create_connection", hangs)
    monkeypatch.setenv("KCRL_RAY_CONNECT_TIMEOUT", "0.2")
    with pytest.raises(ClusterConnectionError, match=r"timed out, waited at most 0.2 s"):
        backend.map_ray(abs, [1], 1, "10.255.255.1:6379", False)


def test_a_bad_address_or_timeout_is_a_config_error(fake_ray, monkeypatch):
    import kcrl.benchmarks.ray_backend as backend

    with pytest.raises(ConfigError, match="the port 'abc' is not a number"):
        backend.map_ray(abs, [1], 1, "head:abc", False)
    monkeypatch.setenv("KCRL_RAY_CONNECT_TIMEOUT", "-3")
    with pytest.raises(ConfigError, match="KCRL_RAY_CONNECT_TIMEOUT must be a positive number"):
        backend.map_ray(abs, [1], 1, "head:6379", False)
