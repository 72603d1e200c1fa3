"""Lesson 14, backprop at LLM scale: memory, gradient all-reduce, sharding, tensor parallelism.

The multi-process exercises run the learner's function inside real
``torch.distributed`` processes (``gloo``), started by the check itself through
:mod:`backprop_course.exercises._processes`: each ``body_*`` function below is what one
rank does (set up its part of the problem, call the learner's function under the
exercise's rules, return plain arrays). The checks never take a rank's word: they compute
every expected value themselves (one process, the whole batch, autograd on the unsplit
layer) and compare.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from backprop_course.compare import (
    Wrong,
    answer_name,
    as_array,
    assert_close,
    check_gradients,
    expect_mapping,
)
from backprop_course.device import torch_threads
from backprop_course.exercises import exercise
from backprop_course.exercises._processes import AnswerFailed, as_dict, ranks, under_rules
from backprop_course.rules import BY_HAND, call_under_rules

# The package's scale-out helpers: none answers these exercises, but an answer built on
# them would not be the learner's own collective code.
FORBIDDEN = ("backprop_course.distributed", "backprop_course.scale")
EXACT = 1e-12  # by hand agrees with autograd to ~1e-15 of the largest entry


# ---------------------------------------------------------------- 14.memory_budget

_MEMORY_NAMES = ("weights", "gradients", "optimizer")


@exercise(
    "14.memory_budget",
    title="Bytes per GPU for mixed-precision Adam, with ZeRO stages 0 to 3",
    points=2,
    answer="bytes_per_gpu",
    hints=(
        "Mixed precision keeps bf16 weights and gradients (2 bytes each per parameter) and, "
        "for the optimizer, an fp32 master copy of the weights plus Adam's two fp32 moments.",
        "Stage 1 shards the optimizer state over the GPUs, stage 2 the gradients too, "
        "stage 3 the weights too: a sharded item costs 1 / world_size of its bytes.",
        "Unsharded: weights 2 N, gradients 2 N, optimizer 12 N bytes.",
    ),
)
def _memory(answer, rng):
    cases = [(int(rng.integers(2, 9)) * 10**9, int(rng.integers(3, 65)), s) for s in (0, 1, 2, 3)]
    rng.shuffle(cases)
    for n_params, world, stage in cases:
        where = f"for N = {n_params:.3g} parameters, world_size={world}, zero_stage={stage}"
        got = expect_mapping(
            call_under_rules(answer, n_params, world, stage, forbid=FORBIDDEN),
            _MEMORY_NAMES,
            name="bytes_per_gpu(...)",
        )
        full = {
            "weights": 2.0 * n_params,
            "gradients": 2.0 * n_params,
            "optimizer": 12.0 * n_params,
        }
        sharded = {"optimizer": 1, "gradients": 2, "weights": 3}
        expected = {k: v / world if stage >= sharded[k] else v for k, v in full.items()}
        for name in ("optimizer", "gradients", "weights"):
            value = as_array(got[name], f"bytes_per_gpu(...)['{name}']")
            mistakes = {}
            if name == "optimizer":
                mistakes = {
                    "forgot the optimizer state: Adam keeps two moments and an fp32 master "
                    "copy per parameter": 0.0,
                    "forgot the fp32 master weights: Adam's two moments are 8 bytes, the "
                    "master copy 4 more": expected[name] * 8 / 12,
                }
            if stage < sharded[name]:
                mistakes[f"sharded the {name} too early: ZeRO stage {stage} keeps them whole"] = (
                    expected[name] / world
                )
            else:
                mistakes[
                    f"did not shard the {name}: stage {stage} splits them over the {world} GPUs"
                ] = expected[name] * world
            if name != "optimizer":
                mistakes[f"counted fp32 {name}: mixed precision keeps them in bf16 (2 bytes)"] = (
                    2 * expected[name]
                )
            assert_close(
                value,
                expected[name],
                name=f"the {name} bytes",
                rtol=1e-9,
                context=where,
                mistakes=mistakes,
            )


# ---------------------------------------------------------------- the data-parallel problem


def _mlp(sizes, seed):
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        linear = torch.nn.Linear(sizes[i], sizes[i + 1], dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(
                torch.randn(linear.weight.shape, generator=generator, dtype=torch.float64)
                / sizes[i] ** 0.5
            )
            linear.bias.copy_(
                0.1 * torch.randn(linear.bias.shape, generator=generator, dtype=torch.float64)
            )
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def _dp_case(rng, world_size: int, micro: int = 1) -> dict:
    sizes = (int(rng.integers(3, 7)), int(rng.integers(4, 9)), int(rng.integers(3, 7)), 1)
    rows = world_size * micro * int(rng.integers(2, 5))
    X = rng.normal(size=(rows, sizes[0]))
    y = np.sin(X.sum(axis=1, keepdims=True)) + 0.1 * rng.normal(size=(rows, 1))
    return {"sizes": sizes, "seed": int(rng.integers(0, 2**31)), "X": X, "y": y, "micro": micro}


def _shard(case: dict, rank: int, world_size: int):
    rows = len(case["X"]) // world_size
    part = slice(rank * rows, (rank + 1) * rows)
    return torch.from_numpy(case["X"][part]), torch.from_numpy(case["y"][part])


def _grads(model) -> dict[str, np.ndarray]:
    return {
        name: (p.grad.detach().numpy().copy() if p.grad is not None else np.zeros(tuple(p.shape)))
        for name, p in model.named_parameters()
    }


def _gradient(case: dict, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Trusted: the mean-squared-error gradient of the case's model on rows ``X, y``."""
    with torch_threads(1), torch.enable_grad():
        model = _mlp(case["sizes"], case["seed"])
        loss = torch.nn.functional.mse_loss(model(torch.from_numpy(X)), torch.from_numpy(y))
        loss.backward()
    return _grads(model)


def _compare_grads(got_ranks, expected, mistakes_for, where):
    """Every rank's gradients against ``expected``; ``mistakes_for(rank)`` names wrong ones."""
    names = list(expected)
    # last rank first: on rank 0 a broadcast of rank 0 and the right answer can look alike
    for rank in reversed(range(len(got_ranks))):
        got = as_dict(got_ranks[rank], names, "the gradients", where)
        check_gradients(
            got,
            expected,
            mistakes=mistakes_for(rank),
            context=f"on rank {rank} {where}",
            rtol=1e-9,
            atol=1e-12,
        )


def _scaled(grads, factor):
    return {k: factor * v for k, v in grads.items()}


def _dp_mistakes(case, world_size, reference):
    """Named mistakes of a gradient all-reduce: per rank, the values they would leave."""
    shards = [
        _gradient(case, *(t.numpy() for t in _shard(case, r, world_size)))
        for r in range(world_size)
    ]

    def mistakes_for(rank):
        return {
            "summed instead of averaged: all_reduce adds the ranks' gradients, divide by "
            "the world size": _scaled(reference, world_size),
            "each rank kept its own shard's gradient: nothing was all-reduced": shards[rank],
            "divided by the world size twice": _scaled(reference, 1 / world_size),
            "every rank got rank 0's gradient: that is a broadcast, not an all-reduce": shards[0],
        }

    return mistakes_for


# ---------------------------------------------------------------- 14.allreduce_grads


def body_allreduce(rank, world_size, answer, case, rules):
    """One rank: forward and backward on its shard, then the learner's sync."""
    model = _mlp(case["sizes"], case["seed"])
    X, y = _shard(case, rank, world_size)
    torch.nn.functional.mse_loss(model(X), y).backward()
    under_rules(rules, answer, model)
    return _grads(model)


@exercise(
    "14.allreduce_grads",
    title="Data parallel by hand: all-reduce the gradients after backward",
    points=3,
    answer="sync_gradients",
    hints=(
        "Every rank ran backward on its own shard; each p.grad holds that shard's gradient.",
        "dist.all_reduce(p.grad) replaces p.grad, in place, by the SUM over the ranks.",
        "The whole-batch loss is the mean over shards: divide by dist.get_world_size().",
    ),
)
def _allreduce_grads(answer, rng):
    for world_size in (2, 3):
        case = _dp_case(rng, world_size)
        where = f"with {world_size} processes, MLP sizes {case['sizes']}"
        reference = _gradient(case, case["X"], case["y"])
        got = ranks(answer, body_allreduce, world_size, case, (False, FORBIDDEN, None), where)
        _compare_grads(got, reference, _dp_mistakes(case, world_size, reference), where)


# ---------------------------------------------------------------- 14.bucketed_allreduce


def _collectives_so_far():
    """How many collectives this rank has started in the default group (None if unknown).

    Counted by the process group itself, so an all-reduce reached through any alias counts.
    """
    import torch.distributed as dist

    group = dist.distributed_c10d._get_default_group()
    count = getattr(group, "_get_sequence_number_for_group", None)
    return int(count()) if count is not None else None


def body_buckets(rank, world_size, answer, case, rules):
    """One rank: the learner's hooks, then forward and backward; how many collectives when."""
    model = _mlp(case["sizes"], case["seed"])
    X, y = _shard(case, rank, world_size)
    params = dict(model.named_parameters())
    buckets = [[params[name] for name in bucket] for bucket in case["buckets"]]
    finish = under_rules(rules, answer, model, buckets)
    if finish is None:
        raise AnswerFailed(
            f"{answer_name('overlap_allreduce')} returned None: is a `return finish` missing?"
        )
    if not callable(finish):
        raise AnswerFailed(
            f"{answer_name('overlap_allreduce')} should return a function finish(), "
            f"got {type(finish).__name__}"
        )
    loss = torch.nn.functional.mse_loss(model(X), y)
    before = _collectives_so_far()
    under_rules(rules, loss.backward)
    between = _collectives_so_far()
    under_rules(rules, finish)
    after = _collectives_so_far()
    if before is None:
        return {"grads": _grads(model), "during": None, "after": None}
    return {"grads": _grads(model), "during": between - before, "after": after - between}


@exercise(
    "14.bucketed_allreduce",
    title="Overlap: all-reduce buckets from gradient hooks while backward runs",
    points=3,
    answer="overlap_allreduce",
    hints=(
        "p.register_post_accumulate_grad_hook(hook) calls hook(p) as soon as p.grad is "
        "final, while backward goes on with the layers below.",
        "Count, per bucket, how many of its parameters are ready; when the last one is, "
        "flatten the bucket's gradients (torch.cat of p.grad.flatten()) and start "
        "dist.all_reduce(flat, async_op=True): keep the work handle and the buffer.",
        "finish(): for each bucket, work.wait(), divide by the world size, and copy the "
        "slices of the buffer back into each p.grad (view_as).",
    ),
)
def _bucketed(answer, rng):
    world_size = 2
    case = _dp_case(rng, world_size)
    names = [n for n, _ in _mlp(case["sizes"], 0).named_parameters()]
    # buckets in the order backward produces gradients: last layer first, 2-3 per bucket
    order = names[::-1]
    cut = int(rng.integers(2, 4))
    case["buckets"] = [order[:cut], order[cut:]]
    where = f"with {world_size} processes and buckets {case['buckets']}"
    reference = _gradient(case, case["X"], case["y"])
    got = ranks(answer, body_buckets, world_size, case, (False, FORBIDDEN, None), where)
    mistakes_for = _dp_mistakes(case, world_size, reference)
    for rank in reversed(range(world_size)):
        result = got[rank]
        if not isinstance(result, Mapping) or "grads" not in result:
            raise Wrong(f"the check could not read rank {rank}'s gradients {where}")
        grads = as_dict(result["grads"], list(reference), "the gradients", where)
        wrong = [
            n for n in reference if not np.allclose(grads[n], reference[n], rtol=1e-9, atol=1e-12)
        ]
        if 0 < len(wrong) < len(reference) and not _matches_a_mistake(grads, mistakes_for(rank)):
            raise Wrong(
                f"on rank {rank} {where}: {', '.join(wrong)} are wrong, the others right: "
                "was their bucket all-reduced before backward had written their gradients? "
                "Start a bucket's all-reduce when its LAST parameter is ready"
            )
        check_gradients(
            grads,
            reference,
            mistakes=mistakes_for(rank),
            context=f"on rank {rank} {where}",
            rtol=1e-9,
            atol=1e-12,
        )
        if result["during"] is not None and result["during"] < len(case["buckets"]):
            raise Wrong(
                f"the gradients are right, but on rank {rank} only {result['during']} "
                f"all-reduce(s) started while backward ran ({result['after']} "
                f"after) {where}: start each bucket's all-reduce from a gradient hook, as "
                "soon as the bucket is complete, so communication overlaps backward"
            )


def _matches_a_mistake(grads, mistakes) -> bool:
    return any(
        all(np.allclose(grads[n], values[n], rtol=1e-9, atol=1e-12) for n in grads)
        for values in mistakes.values()
    )


# ---------------------------------------------------------------- 14.accumulate_no_sync


def body_accumulate(rank, world_size, answer, case, rules):
    """One rank: DDP with a hook counting all-reduces, the learner's accumulation."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model = _mlp(case["sizes"], case["seed"])
    ddp = DistributedDataParallel(model)
    calls = {"n": 0}

    def counting(state, bucket):
        calls["n"] += 1
        buffer = bucket.buffer().div_(world_size)
        return dist.all_reduce(buffer, async_op=True).get_future().then(lambda f: f.value()[0])

    ddp.register_comm_hook(None, counting)
    X, y = _shard(case, rank, world_size)
    micro_batches = list(zip(X.chunk(case["micro"]), y.chunk(case["micro"])))
    under_rules(rules, answer, ddp, micro_batches)
    return {"grads": _grads(model), "allreduces": calls["n"]}


@exercise(
    "14.accumulate_no_sync",
    title="Gradient accumulation with DDP's no_sync",
    points=2,
    answer="accumulate_gradients",
    hints=(
        "Each micro-batch's loss is the mean over its rows; the big batch's loss is the mean "
        "of the micro-batch losses: divide each by the number of micro-batches.",
        "Backward adds into p.grad: do not zero it between micro-batches.",
        "Run every micro-batch but the last, its forward and its backward, inside "
        "`with ddp_model.no_sync():` (DDP decides in the forward whether the backward will "
        "all-reduce), so DDP all-reduces once, during the last backward.",
    ),
)
def _accumulate(answer, rng):
    world_size = 2
    micro = int(rng.integers(3, 5))
    case = _dp_case(rng, world_size, micro)
    where = f"with {world_size} processes and {micro} micro-batches per rank"
    reference = _gradient(case, case["X"], case["y"])
    got = ranks(
        answer,
        body_accumulate,
        world_size,
        case,
        (False, FORBIDDEN, None),
        where,
        warm=("torch._dynamo",),
    )
    base = _dp_mistakes(case, world_size, reference)
    rows = len(case["X"]) // world_size // micro
    last = [
        slice(r * rows * micro + (micro - 1) * rows, (r + 1) * rows * micro)
        for r in range(world_size)
    ]
    last_only = _gradient(
        case,
        np.concatenate([case["X"][s] for s in last]),
        np.concatenate([case["y"][s] for s in last]),
    )

    def mistakes_for(rank):
        return {
            **base(rank),
            "summed the micro-batch losses: divide each by the number of micro-batches": (
                _scaled(reference, micro)
            ),
            "only the last micro-batch's gradient is left: was p.grad zeroed (or "
            "overwritten) between micro-batches?": last_only,
        }

    for rank in reversed(range(world_size)):
        result = got[rank]
        if not isinstance(result, Mapping) or "grads" not in result:
            raise Wrong(f"the check could not read rank {rank}'s gradients {where}")
        grads = as_dict(result["grads"], list(reference), "the gradients", where)
        check_gradients(
            grads,
            reference,
            mistakes=mistakes_for(rank),
            context=f"on rank {rank} {where}",
            rtol=1e-9,
            atol=1e-12,
        )
        if result["allreduces"] == 0:
            raise Wrong(
                f"the gradients are right, but DDP never all-reduced {where}: run the last "
                "micro-batch outside no_sync(), so that DDP's own all-reduce happens, once"
            )
        if result["allreduces"] > 1:
            raise Wrong(
                f"the gradients are right, but DDP all-reduced {result['allreduces']} times "
                f"{where}: once per micro-batch. Run every micro-batch but the last inside "
                "ddp_model.no_sync(), forward AND backward: DDP decides during the forward "
                "whether the next backward all-reduces"
            )


# ---------------------------------------------------------------- 14.zero_step


def body_zero(rank, world_size, answer, case, rules):
    """One rank: its local gradient and momentum shard, then the learner's sharded step."""
    n = len(case["param"])
    shard = slice(rank * n // world_size, (rank + 1) * n // world_size)
    param = torch.tensor(case["param"])
    grad = torch.tensor(case["grads"][rank])
    momentum = torch.tensor(case["momentum"][shard])
    under_rules(rules, answer, param, grad, momentum, case["lr"], case["beta"])
    return {"param": param.numpy().copy(), "momentum": momentum.numpy().copy()}


@exercise(
    "14.zero_step",
    title="A sharded optimizer step (ZeRO): reduce-scatter, update your shard, all-gather",
    points=3,
    answer="zero_sgd_step",
    hints=(
        "Rank r owns elements [r n / W, (r + 1) n / W) of the flat vector: its momentum "
        "holds only those.",
        "dist.reduce_scatter_single(out, flat_grad) (older torch: reduce_scatter_tensor) "
        "leaves on rank r the SUM over ranks of its slice; divide by the world size.",
        "momentum.mul_(beta).add_(g); your slice of flat_param -= lr * momentum; then "
        "dist.all_gather_single(flat_param, my_slice.clone()) puts every rank's slice "
        "back in place.",
    ),
)
def _zero(answer, rng):
    for world_size in (2, 3):
        n = world_size * int(rng.integers(2, 6))
        grads = [rng.normal(size=n) for _ in range(world_size)]
        case = {
            "param": rng.normal(size=n),
            "grads": grads,
            "momentum": rng.normal(size=n),
            "lr": float(rng.uniform(0.05, 0.5)),
            "beta": float(rng.uniform(0.5, 0.95)),
        }
        where = f"with {world_size} processes and {n} parameters"
        got = ranks(answer, body_zero, world_size, case, (False, FORBIDDEN, None), where)

        def step(g, case=case):
            m = case["beta"] * case["momentum"] + g
            return case["param"] - case["lr"] * m, m

        param, momentum = step(np.mean(grads, axis=0))
        summed, summed_m = step(np.sum(grads, axis=0))
        for rank in reversed(range(world_size)):
            result = got[rank]
            if not isinstance(result, Mapping) or "param" not in result:
                raise Wrong(f"the check could not read rank {rank}'s state {where}")
            shard = slice(rank * n // world_size, (rank + 1) * n // world_size)
            local, local_m = step(grads[rank])
            stale = case["param"].copy()
            stale[shard] = param[shard]
            context = f"on rank {rank} {where}"
            assert_close(
                result["momentum"],
                momentum[shard],
                name="the momentum shard",
                rtol=1e-9,
                context=context,
                mistakes={
                    "summed instead of averaged: reduce-scatter adds the ranks' gradients, "
                    "divide by the world size": summed_m[shard],
                    "used this rank's own gradient: the gradients were never "
                    "reduce-scattered": local_m[shard],
                    "updated another rank's slice: rank r owns elements r n/W to (r+1) n/W": (
                        momentum[: len(momentum) // world_size]
                        if rank
                        else momentum[len(momentum) // world_size : 2 * len(momentum) // world_size]
                    ),
                },
            )
            assert_close(
                result["param"],
                param,
                name="flat_param after the step",
                rtol=1e-9,
                context=context,
                mistakes={
                    "only this rank's slice was updated: all-gather the slices so every "
                    "rank holds the whole new parameter vector": stale,
                    "summed instead of averaged": summed,
                    "used this rank's own gradient: nothing was reduce-scattered": local,
                },
            )


# ---------------------------------------------------------------- 14.tp_backward


def body_tp(rank, world_size, answer, case, rules):
    """One rank: its column slice of A and row slice of B, then the learner's backward."""
    H = case["A"].shape[1] // world_size
    cols = slice(rank * H, (rank + 1) * H)
    x = torch.tensor(case["x"])
    A = torch.tensor(case["A"][:, cols])
    B = torch.tensor(case["B"][cols, :])
    grad_y = torch.tensor(case["grad_y"])
    got = under_rules(rules, answer, x, A, B, grad_y)
    if got is None:
        raise AnswerFailed("tp_mlp_backward returned None: is a `return` missing?")
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        raise AnswerFailed(
            "tp_mlp_backward should return a tuple (grad_x, grad_A, grad_B), got "
            f"{type(got).__name__}"
        )
    out = {}
    for name, value in zip(("grad_x", "grad_A", "grad_B"), got):
        if value is None:
            raise AnswerFailed(f"{name} is None: is a `return` missing?")
        out[name] = value.detach().numpy().copy() if torch.is_tensor(value) else np.asarray(value)
    return out


@exercise(
    "14.tp_backward",
    title="The tensor-parallel MLP's backward: where the second all-reduce goes",
    points=3,
    answer="tp_mlp_backward",
    hints=(
        "Recompute this rank's hidden slice h = tanh(x @ A) first. y's gradient is the same "
        "on every rank (the forward all-reduce copies y to all): use it as it is.",
        "grad_B = h.T @ grad_y and grad_A = x.T @ ((grad_y @ B.T) * (1 - h**2)) stay on this "
        "rank: each rank owns its slices' gradients.",
        "grad_x = dh @ A.T is only this rank's share of the input gradient (x fed every rank's "
        "columns): dist.all_reduce it, summed, not averaged.",
    ),
)
def _tp(answer, rng):
    world_size = 2
    for _ in range(2):
        N, C = int(rng.integers(2, 6)), int(rng.integers(2, 6))
        H = world_size * int(rng.integers(2, 4))
        case = {
            "x": rng.normal(size=(N, C)),
            "A": rng.normal(size=(C, H)) / np.sqrt(C),
            "B": rng.normal(size=(H, C)) / np.sqrt(H),
            "grad_y": rng.normal(size=(N, C)),
        }
        where = f"with {world_size} processes, x {N}x{C}, hidden {H}"
        got = ranks(answer, body_tp, world_size, case, (True, FORBIDDEN, BY_HAND), where)
        with torch.enable_grad():
            x, A, B = (torch.tensor(case[k], requires_grad=True) for k in ("x", "A", "B"))
            y = torch.tanh(x @ A) @ B
            y.backward(torch.tensor(case["grad_y"]))
        h = np.tanh(case["x"] @ case["A"])
        dh = (case["grad_y"] @ case["B"].T) * (1 - h**2)
        partial = [
            dh[:, r * H // 2 : (r + 1) * H // 2] @ case["A"][:, r * H // 2 : (r + 1) * H // 2].T
            for r in range(world_size)
        ]
        for rank in reversed(range(world_size)):
            cols = slice(rank * H // world_size, (rank + 1) * H // world_size)
            expected = {
                "grad_x": x.grad.numpy(),
                "grad_A": A.grad.numpy()[:, cols],
                "grad_B": B.grad.numpy()[cols, :],
            }
            result = as_dict(got[rank], list(expected), "the gradients", where)
            other = slice((1 - rank) * H // 2, (2 - rank) * H // 2)
            mistakes = {
                "forgot the backward all-reduce: this rank's grad_x is only its share of "
                "the hidden units; sum the shares with dist.all_reduce": {"grad_x": partial[rank]},
                "averaged grad_x over the ranks: the shares add up (sum, not mean)": {
                    "grad_x": x.grad.numpy() / world_size
                },
                "all-reduced the weight gradients too: each rank owns its slices' "
                "gradients, only grad_x needs the all-reduce": {
                    "grad_A": A.grad.numpy()[:, cols] + A.grad.numpy()[:, other],
                    "grad_B": B.grad.numpy()[cols, :] + B.grad.numpy()[other, :],
                },
                "all-reduced grad_y (the wrong direction): grad_y is already whole on every "
                "rank, the forward's all-reduce is an identity backward": {
                    "grad_x": world_size * x.grad.numpy(),
                    "grad_A": world_size * A.grad.numpy()[:, cols],
                    "grad_B": world_size * B.grad.numpy()[cols, :],
                },
            }
            check_gradients(
                result,
                expected,
                mistakes=mistakes,
                context=f"on rank {rank} {where}",
                rtol=1e-9,
                atol=1e-12,
            )
            _exact(result, expected, where)


def _exact(got: Mapping, expected: Mapping, where: str) -> None:
    for name, value in expected.items():
        scale = max(float(np.max(np.abs(value))), 1e-300)
        error = float(np.max(np.abs(got[name] - value))) / scale
        if error > EXACT:
            raise Wrong(
                f"{name} agrees with autograd only to {error:.1e} of its largest entry {where}: "
                "this exercise asks for the exact gradient by hand (a finite difference is "
                "not exact)"
            )


# ---------------------------------------------------------------- 14.swiglu_backward


def _silu(a):
    return a / (1 + np.exp(-a))


@exercise(
    "14.swiglu_backward",
    title="SwiGLU's backward by hand",
    points=3,
    answer="swiglu_backward",
    hints=(
        "Name the pieces: a = x @ W, b = x @ V, out = silu(a) * b. The gradient splits in "
        "two at the product: d_silu = grad_out * b and db = grad_out * silu(a).",
        "silu(a) = a * sigmoid(a), so silu'(a) = sigmoid(a) * (1 + a * (1 - sigmoid(a))): "
        "the product rule, not just sigmoid(a).",
        "da = d_silu * silu'(a); grad_W = x.T @ da, grad_V = x.T @ db, and x feeds both: "
        "grad_x = da @ W.T + db @ V.T.",
    ),
)
def _swiglu(answer, rng):
    for _ in range(3):
        N, C, H = (int(n) for n in rng.integers(2, 7, size=3))
        while H == C:
            H += 1
        x, W, V = rng.normal(size=(N, C)), rng.normal(size=(C, H)), rng.normal(size=(C, H))
        grad_out = rng.normal(size=(N, H))
        where = f"for x {N}x{C}, W and V {C}x{H}"
        with torch.enable_grad():
            tx, tW, tV = (torch.tensor(v, requires_grad=True) for v in (x, W, V))
            out = torch.nn.functional.silu(tx @ tW) * (tx @ tV)
            out.backward(torch.tensor(grad_out))
        expected = {"grad_x": tx.grad.numpy(), "grad_W": tW.grad.numpy(), "grad_V": tV.grad.numpy()}
        got = call_under_rules(
            answer,
            *(torch.tensor(v) for v in (x, W, V, grad_out)),
            autograd=True,
            forbid=FORBIDDEN,
        )
        if got is None or not isinstance(got, (tuple, list)) or len(got) != 3:
            kind = "None: is a `return` missing?" if got is None else type(got).__name__
            raise Wrong(f"swiglu_backward should return (grad_x, grad_W, grad_V), got {kind}")
        result = {k: as_array(v, k) for k, v in zip(expected, got)}
        a = x @ W
        sig = 1 / (1 + np.exp(-a))
        b = x @ V
        da_sig = grad_out * b * sig
        db = grad_out * _silu(a)
        check_gradients(
            result,
            expected,
            mistakes={
                "used sigmoid(a) as silu'(a): silu(a) = a * sigmoid(a) needs the product rule": {
                    "grad_W": x.T @ da_sig,
                    "grad_x": da_sig @ W.T + db @ V.T,
                },
                "x feeds both branches: add the gate's path (through W) to grad_x": {
                    "grad_x": db @ V.T
                },
                "x feeds both branches: add the value's path (through V) to grad_x": {
                    "grad_x": expected["grad_x"] - db @ V.T
                },
                "swapped the branches: the gradient of silu(a) * b is grad_out * b for "
                "silu(a), grad_out * silu(a) for b": {
                    "grad_V": x.T @ (grad_out * b),
                },
            },
            context=where,
            rtol=1e-9,
            atol=1e-12,
        )
        _exact(result, expected, where)
