"""The linearizability checker: it must accept valid histories and reject broken ones.

Histories are written by hand, then also generated from a sequential run (always
linearizable) and checked against a naive brute force over all orders.
"""

from __future__ import annotations

import itertools
import random

from quorumdb.check.linearizability import (
    Operation,
    RegisterModel,
    Verdict,
    check_linearizable,
    check_per_key,
)


def op(
    process: int,
    function: str,
    argument: object,
    result: object,
    invoked_ms: int,
    completed_ms: int | None,
    key: str = "k",
) -> Operation:
    return Operation(process, function, key, argument, result, invoked_ms, completed_ms)  # type: ignore[arg-type]


def verdict(operations: list[Operation]) -> Verdict:
    return check_linearizable(operations, RegisterModel()).verdict


def test_sequential_put_then_read_is_linearizable() -> None:
    assert (
        verdict([op(1, "put", "a", None, 0, 1), op(2, "read", None, "a", 2, 3)])
        is Verdict.LINEARIZABLE
    )


def test_a_stale_read_after_a_completed_write_is_a_violation() -> None:
    history = [
        op(1, "put", "a", None, 0, 1),
        op(1, "put", "b", None, 2, 3),
        op(2, "read", None, "a", 4, 5),
    ]
    result = check_linearizable(history, RegisterModel())
    assert result.verdict is Verdict.VIOLATION
    assert "read" in result.detail


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in ("a", "b"):
        history = [
            op(1, "put", "a", None, 0, 1),
            op(1, "put", "b", None, 2, 10),
            op(2, "read", None, seen, 3, 4),
        ]
        assert verdict(history) is Verdict.LINEARIZABLE


def test_reads_may_not_go_back_in_time() -> None:
    history = [
        op(1, "put", "a", None, 0, 1),
        op(1, "put", "b", None, 2, 20),
        op(2, "read", None, "b", 3, 4),
        op(3, "read", None, "a", 5, 6),  # after someone already saw b
    ]
    assert verdict(history) is Verdict.VIOLATION


def test_an_indeterminate_write_may_or_may_not_take_effect() -> None:
    base = [op(1, "put", "a", None, 0, 1), op(2, "put", "x", None, 2, None)]
    assert verdict(base + [op(3, "read", None, "x", 5, 6)]) is Verdict.LINEARIZABLE
    assert verdict(base + [op(3, "read", None, "a", 5, 6)]) is Verdict.LINEARIZABLE
    # ...but not both: once x was seen, a cannot come back.
    both = base + [op(3, "read", None, "x", 5, 6), op(3, "read", None, "a", 7, 8)]
    assert verdict(both) is Verdict.VIOLATION


def test_compare_and_set_results_must_match_the_state() -> None:
    ok = [op(1, "put", "a", None, 0, 1), op(2, "cas", ("a", "b"), True, 2, 3)]
    assert verdict(ok) is Verdict.LINEARIZABLE
    wrong = [op(1, "put", "a", None, 0, 1), op(2, "cas", ("a", "b"), False, 2, 3)]
    assert verdict(wrong) is Verdict.VIOLATION
    double = [
        op(1, "put", "a", None, 0, 1),
        op(2, "cas", ("a", "b"), True, 2, 5),
        op(3, "cas", ("a", "c"), True, 2, 5),  # both cannot have swapped a
    ]
    assert verdict(double) is Verdict.VIOLATION


def test_an_indeterminate_cas_takes_effect_only_where_it_would_swap() -> None:
    history = [
        op(1, "put", "a", None, 0, 1),
        op(2, "cas", ("zzz", "b"), None, 2, None),
        op(3, "read", None, "b", 5, 6),
    ]
    assert verdict(history) is Verdict.VIOLATION


def test_the_search_is_bounded_and_says_unknown() -> None:
    history = [op(process, "put", f"v{process}", None, 0, 100) for process in range(14)]
    history.append(op(99, "read", None, "never-written", 200, 201))
    result = check_linearizable(history, RegisterModel(), step_limit=500)
    assert result.verdict is Verdict.UNKNOWN
    assert "500" in result.detail


def test_per_key_checking_isolates_the_broken_key() -> None:
    history = [
        op(1, "put", "a", None, 0, 1, key="good"),
        op(2, "read", None, "a", 2, 3, key="good"),
        op(1, "put", "a", None, 0, 1, key="bad"),
        op(2, "read", None, "zzz", 2, 3, key="bad"),
    ]
    results = check_per_key(history, lambda key: RegisterModel())
    assert results["good"].ok
    assert results["bad"].verdict is Verdict.VIOLATION


def brute_force(operations: list[Operation]) -> bool:
    """Every permutation (and every subset of indeterminate operations): the reference."""
    model = RegisterModel()
    determinate = [item for item in operations if not item.indeterminate]
    optional = [item for item in operations if item.indeterminate]
    for size in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, size):
            for order in itertools.permutations(determinate + list(chosen)):
                if not respects_real_time(order):
                    continue
                state = model.initial()
                for item in order:
                    possible, state = model.step(state, item)
                    if not possible:
                        break
                else:
                    return True
    return False


def respects_real_time(order: tuple[Operation, ...]) -> bool:
    for earlier_position, earlier in enumerate(order):
        for later in order[earlier_position + 1 :]:
            if later.completed_ms is not None and later.completed_ms < earlier.invoked_ms:
                return False
    return True


def test_the_checker_agrees_with_brute_force_on_random_small_histories() -> None:
    seed = 20_260_101
    rng = random.Random(seed)
    disagreements = []
    for case in range(300):
        operations = []
        for process in range(rng.randint(1, 5)):
            invoked_ms = rng.randint(0, 10)
            completed_ms = None if rng.random() < 0.2 else invoked_ms + rng.randint(0, 10)
            function = rng.choice(["put", "cas", "read"])
            value = rng.choice(["a", "b", None])
            if function == "put":
                operations.append(op(process, "put", value or "a", None, invoked_ms, completed_ms))
            elif function == "cas":
                operations.append(
                    op(
                        process,
                        "cas",
                        (value, rng.choice("ab")),
                        rng.random() < 0.5,
                        invoked_ms,
                        completed_ms,
                    )
                )
            elif completed_ms is not None:
                operations.append(op(process, "read", None, value, invoked_ms, completed_ms))
        expected = brute_force(operations)
        got = check_linearizable(operations, RegisterModel()).verdict is Verdict.LINEARIZABLE
        if got != expected:
            disagreements.append(case)
    assert disagreements == [], f"seed {seed}: cases {disagreements}"
