"""Pooled actors behave as pykka actors do, on a few shared threads."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from pykka._envelope import Envelope

from actors.pool import Dispatcher, PooledActor


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    pool = Dispatcher(3, name="test-pool", batch=4)
    try:
        yield pool
    finally:
        pool.shutdown()


class Counter(PooledActor):
    def __init__(self, dispatcher: Dispatcher, log: list[str] | None = None) -> None:
        super().__init__(dispatcher)
        self.count = 0
        self.inside = 0
        self.overlaps = 0
        self.log = log if log is not None else []

    def on_start(self) -> None:
        self.log.append("start")

    def on_stop(self) -> None:
        self.log.append("stop")

    def on_failure(self, *exc: Any) -> None:
        self.log.append("failure")

    def on_receive(self, message: Any) -> Any:
        self.inside += 1
        if self.inside > 1:
            self.overlaps += 1
        try:
            if message == "boom":
                raise RuntimeError("counter broke")
            if message == "get":
                return (self.count, self.overlaps)
            self.count += 1
            return None
        finally:
            self.inside -= 1

    def add(self, n: int) -> int:
        self.count += n
        return self.count


def test_messages_run_in_order_and_never_on_two_threads_at_once(dispatcher: Dispatcher) -> None:
    refs = [Counter.spawn(dispatcher) for _ in range(20)]

    def hammer(ref: pykka.ActorRef[Any]) -> None:
        for _ in range(500):
            ref.tell("inc")

    threads = [threading.Thread(target=hammer, args=(ref,)) for ref in refs for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [ref.ask("get", timeout=5) for ref in refs] == [(1000, 0)] * 20


def test_ask_proxy_and_stop_work_like_pykka(dispatcher: Dispatcher) -> None:
    log: list[str] = []
    ref = Counter.spawn(dispatcher, log)
    assert ref.proxy().add(5).get(timeout=5) == 5
    assert ref.stop(timeout=5) is True
    assert log == ["start", "stop"]
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("inc")


def test_an_exception_from_an_ask_goes_to_the_caller_and_the_actor_lives(
    dispatcher: Dispatcher,
) -> None:
    ref = Counter.spawn(dispatcher)
    with pytest.raises(RuntimeError, match="counter broke"):
        ref.ask("boom", timeout=5)
    assert ref.ask("get", timeout=5) == (0, 0)


def test_an_exception_from_a_tell_stops_the_actor_and_calls_on_failure(
    dispatcher: Dispatcher,
) -> None:
    log: list[str] = []
    ref = Counter.spawn(dispatcher, log)
    ref.tell("boom")
    assert ref.actor_stopped.wait(5)
    assert log == ["start", "failure"]
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("get", timeout=5)


def test_an_actor_told_last_runs_next_on_the_same_thread() -> None:
    # One thread, and an actor already waiting in the shared queue: the actor told by a
    # handler whose actor has no more mail runs before it, on the thread that ran the
    # handler, instead of going to the back of the queue and waking another thread.
    pool = Dispatcher(1, name="one")
    try:
        order: list[str] = []
        paused = threading.Event()
        queued = threading.Event()
        done = threading.Event()

        class Note(PooledActor):
            def on_receive(self, message: Any) -> Any:
                order.append(message)
                if message == "queued first":
                    done.set()

        class Teller(PooledActor):
            def on_receive(self, message: Any) -> Any:
                if message == "pause":
                    paused.set()
                    queued.wait(5)
                else:
                    told.tell("told last")

        told = Note.spawn(pool)
        waiting = Note.spawn(pool)
        teller = Teller.spawn(pool)
        teller.tell("pause")
        assert paused.wait(5)  # the other two have started: their start came first
        teller.tell("go")
        waiting.tell("queued first")
        queued.set()
        assert done.wait(5)
        assert order == ["told last", "queued first"]
    finally:
        pool.shutdown()


def test_an_actor_told_from_a_busy_actor_does_not_wait_for_its_mail(
    dispatcher: Dispatcher,
) -> None:
    # A handler of an actor with more mail waiting hands the told actor to the pool:
    # it runs on another thread while the busy actor is still at work.
    queued = threading.Event()
    gate = threading.Event()
    reached = threading.Event()

    class Busy(PooledActor):
        def on_receive(self, message: Any) -> Any:
            if message == "pause":
                queued.wait(5)
            elif message == "tell":
                waiter.tell("go")
            elif message == "hold":
                gate.wait(10)

    class Waiter(PooledActor):
        def on_receive(self, message: Any) -> Any:
            reached.set()

    waiter = Waiter.spawn(dispatcher)
    busy = Busy.spawn(dispatcher)
    busy.tell("pause")
    busy.tell("tell")
    busy.tell("hold")  # waiting in Busy's inbox when it tells the waiter
    queued.set()
    try:
        assert reached.wait(5)
    finally:
        gate.set()


class Idle(PooledActor):
    def on_receive(self, message: Any) -> Any:
        return None


def test_a_pooled_actor_has_every_attribute_pykka_gives_an_actor(
    dispatcher: Dispatcher,
) -> None:
    # PooledActor.__init__ does pykka.Actor.__init__'s work itself; a pykka that sets
    # something more must not go unnoticed.
    class Plain(pykka.ThreadingActor):
        pass

    ref = Idle.spawn(dispatcher)
    actor = ref._actor_weakref()
    assert actor is not None
    missing = [name for name in vars(Plain()) if not hasattr(actor, name)]
    assert missing == []
    assert ref.actor_urn == actor.actor_urn
    assert ref.actor_class is Idle
    assert str(ref) == f"Idle ({actor.actor_urn})"


def test_actor_stopped_behaves_as_the_event_pykka_gives_an_actor(dispatcher: Dispatcher) -> None:
    ref = Idle.spawn(dispatcher)
    assert ref.is_alive()
    assert not ref.actor_stopped.is_set()
    assert ref.actor_stopped.wait(0.01) is False
    ref.actor_stopped.set()
    assert ref.actor_stopped.is_set()
    assert not ref.is_alive()
    assert ref.actor_stopped.wait(0) is True
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("anything")
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("anything", timeout=5)


def test_everyone_waiting_for_a_stop_is_woken_by_it(dispatcher: Dispatcher) -> None:
    refs = [Idle.spawn(dispatcher) for _ in range(20)]
    results: list[bool] = []
    lock = threading.Lock()

    def wait_for(ref: pykka.ActorRef[Any]) -> None:
        stopped = ref.actor_stopped.wait(5)
        with lock:
            results.append(stopped)

    waiters = [threading.Thread(target=wait_for, args=(ref,)) for ref in refs for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    for ref in refs:
        ref.stop(block=False)
    for waiter in waiters:
        waiter.join(10)
    assert results == [True] * len(waiters)
    # And a stop that came first: the waiter does not wait.
    assert refs[0].actor_stopped.wait(0) is True


class Ordered(PooledActor):
    """Checks that each sender's messages arrive complete, in order, one at a time."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        super().__init__(dispatcher)
        self.last: dict[int, int] = {}
        self.received = 0
        self.disorder = 0
        self.inside = 0
        self.overlaps = 0

    def on_receive(self, message: Any) -> Any:
        self.inside += 1
        if self.inside > 1:
            self.overlaps += 1
        try:
            if message == "get":
                return (self.received, self.disorder, self.overlaps)
            sender, number = message
            if self.last.get(sender, -1) != number - 1:
                self.disorder += 1
            self.last[sender] = number
            self.received += 1
            return None
        finally:
            self.inside -= 1


def test_actors_sharing_one_inbox_lock_lose_and_reorder_nothing() -> None:
    # Every inbox on the same lock: the most sharing there can be.
    pool = Dispatcher(3, name="one-lock", batch=4, locks=1)
    try:
        refs = [Ordered.spawn(pool) for _ in range(20)]

        def send(ref: pykka.ActorRef[Any], sender: int) -> None:
            for number in range(500):
                ref.tell((sender, number))

        threads = [
            threading.Thread(target=send, args=(ref, sender)) for ref in refs for sender in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [ref.ask("get", timeout=5) for ref in refs] == [(1500, 0, 0)] * 20
    finally:
        pool.shutdown()


def test_a_pooled_actor_costs_the_garbage_collector_three_objects(
    dispatcher: Dispatcher,
) -> None:
    # The actor, its ref and its inbox. Full collections walk every one of them while
    # every message in flight waits; with tens of thousands of conversations, each
    # object more per actor is tens of thousands more for every full collection.
    gc.collect()
    before = len(gc.get_objects())
    refs = [Idle.spawn(dispatcher) for _ in range(1000)]
    for ref in refs:
        ref.ask("started?", timeout=5)
    gc.collect()
    grown = len(gc.get_objects()) - before
    assert grown < 3.5 * len(refs)  # room for what other threads make meanwhile


def test_a_stopped_actor_is_freed_without_waiting_for_a_full_collection(
    dispatcher: Dispatcher,
) -> None:
    # A retired conversation must not wait, with all it holds, for the next full
    # collection (which walks it once more while every message in flight waits).
    ref = Idle.spawn(dispatcher)
    actor = ref._actor_weakref()
    assert actor is not None
    gone = threading.Event()
    finalizer = weakref.finalize(actor, gone.set)
    del actor
    gc.disable()  # so that only reference counting can free it
    try:
        assert ref.stop(timeout=5) is True
        assert gone.wait(5)
    finally:
        gc.enable()
        finalizer.detach()
    assert ref._actor_weakref() is None
    # Mail put in after it is gone (a tell that passed `is_alive` just before the
    # stop) is refused as the actor would have refused it.
    future: pykka.Future[Any] = pykka.ThreadingFuture()
    ref.actor_inbox.put(Envelope("late", reply_to=future))
    with pytest.raises(pykka.ActorDeadError, match=r"Idle \(urn:uuid:.*\) stopped before"):
        future.get(timeout=5)
