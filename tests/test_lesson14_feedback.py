"""Lesson 14: the multi-process checks run learners' functions in real ranks and name mistakes."""

from __future__ import annotations

import torch
import torch.distributed as dist

from feedback import lesson_feedback_tests

# ---------------------------------------------------------------- correct answers


def sync_gradients(model):
    world = dist.get_world_size()
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= world


def overlap_allreduce(model, buckets):
    world = dist.get_world_size()
    pending = []
    left = {}

    def make_hook(index):
        def hook(param):
            left[index] -= 1
            if left[index] == 0:
                flat = torch.cat([p.grad.flatten() for p in buckets[index]])
                pending.append((index, flat, dist.all_reduce(flat, async_op=True)))

        return hook

    for index, bucket in enumerate(buckets):
        left[index] = len(bucket)
        for p in bucket:
            p.register_post_accumulate_grad_hook(make_hook(index))

    def finish():
        for index, flat, work in pending:
            work.wait()
            flat /= world
            offset = 0
            for p in buckets[index]:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()

    return finish


def accumulate_gradients(ddp_model, micro_batches):
    k = len(micro_batches)
    with ddp_model.no_sync():
        for X, y in micro_batches[:-1]:
            (torch.nn.functional.mse_loss(ddp_model(X), y) / k).backward()
    X, y = micro_batches[-1]
    (torch.nn.functional.mse_loss(ddp_model(X), y) / k).backward()


def accumulate_backward_only_in_no_sync(ddp_model, micro_batches):
    """The forward outside no_sync: DDP has already decided to all-reduce."""
    k = len(micro_batches)
    for i, (X, y) in enumerate(micro_batches):
        loss = torch.nn.functional.mse_loss(ddp_model(X), y) / k
        if i < k - 1:
            with ddp_model.no_sync():
                loss.backward()
        else:
            loss.backward()


def zero_sgd_step(flat_param, flat_grad, momentum, lr, beta):
    world, rank = dist.get_world_size(), dist.get_rank()
    n = flat_param.numel() // world
    g = torch.empty(n, dtype=flat_grad.dtype)
    dist.reduce_scatter_single(g, flat_grad)
    momentum.mul_(beta).add_(g / world)
    mine = flat_param[rank * n : (rank + 1) * n] - lr * momentum
    dist.all_gather_single(flat_param, mine.contiguous())


def bytes_per_gpu(n_params, world_size, zero_stage):
    out = {"weights": 2.0 * n_params, "gradients": 2.0 * n_params, "optimizer": 12.0 * n_params}
    for stage, name in ((1, "optimizer"), (2, "gradients"), (3, "weights")):
        if zero_stage >= stage:
            out[name] /= world_size
    return out


def tp_mlp_backward(x, A, B, grad_y):
    h = torch.tanh(x @ A)
    grad_B = h.T @ grad_y
    dh = (grad_y @ B.T) * (1 - h**2)
    grad_A = x.T @ dh
    grad_x = dh @ A.T
    dist.all_reduce(grad_x)
    return grad_x, grad_A, grad_B


def swiglu_backward(x, W, V, grad_out):
    a, b = x @ W, x @ V
    s = torch.sigmoid(a)
    db = grad_out * a * s
    da = grad_out * b * s * (1 + a * (1 - s))
    return da @ W.T + db @ V.T, x.T @ da, x.T @ db


def zero_step_with_all_reduce(flat_param, flat_grad, momentum, lr, beta):
    """ZeRO-1 with an all-reduce instead of a reduce-scatter: more traffic, same result."""
    world, rank = dist.get_world_size(), dist.get_rank()
    n = flat_param.numel() // world
    g = flat_grad.clone()
    dist.all_reduce(g)
    momentum.mul_(beta).add_(g[rank * n : (rank + 1) * n] / world)
    pieces = [torch.empty(n, dtype=flat_param.dtype) for _ in range(world)]
    dist.all_gather(pieces, flat_param[rank * n : (rank + 1) * n] - lr * momentum)
    flat_param.copy_(torch.cat(pieces))


def sync_gradients_coalesced(model):
    """One all-reduce of all gradients flattened together (what a single bucket does)."""
    grads = [p.grad for p in model.parameters()]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    for g, piece in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(piece.view_as(g))


# several correct forms per exercise (the later ones written differently from the solution),
# each passing on the exercise's number of seeds
def overlap_through_an_alias(model, buckets):
    """Synchronous all-reduces per bucket, called through a name bound at import."""
    from torch.distributed import all_reduce

    left = [len(b) for b in buckets]

    def make_hook(index):
        def hook(param):
            left[index] -= 1
            if left[index] == 0:
                for p in buckets[index]:
                    all_reduce(p.grad)
                    p.grad /= dist.get_world_size()

        return hook

    for index, bucket in enumerate(buckets):
        for p in bucket:
            p.register_post_accumulate_grad_hook(make_hook(index))
    return lambda: None


CORRECT_ANSWERS = {
    "14.allreduce_grads": [sync_gradients, sync_gradients_coalesced],
    "14.bucketed_allreduce": [overlap_allreduce, overlap_through_an_alias],
    "14.accumulate_no_sync": [accumulate_gradients],
    "14.zero_step": [zero_sgd_step, zero_step_with_all_reduce],
    "14.memory_budget": [bytes_per_gpu],
    "14.tp_backward": [tp_mlp_backward],
    "14.swiglu_backward": [swiglu_backward],
}

# ---------------------------------------------------------------- wrong answers


def sync_summed(model):
    for p in model.parameters():
        dist.all_reduce(p.grad)


def sync_nothing(model):
    pass


def sync_broadcast(model):
    for p in model.parameters():
        dist.broadcast(p.grad, src=0)


def sync_raises(model):
    raise ValueError("not yet")


def overlap_after_backward(model, buckets):
    def finish():
        sync_gradients(model)

    return finish


def overlap_too_early(model, buckets):
    """Starts each bucket on its FIRST ready parameter: the others' gradients are not there."""
    world = dist.get_world_size()
    pending = []

    def make_hook(index):
        def hook(param):
            if index not in {i for i, _, _ in pending}:
                grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in buckets[index]]
                flat = torch.cat([g.flatten() for g in grads])
                pending.append((index, flat, dist.all_reduce(flat, async_op=True)))

        return hook

    for index, bucket in enumerate(buckets):
        for p in bucket:
            p.register_post_accumulate_grad_hook(make_hook(index))

    def finish():
        for index, flat, work in pending:
            work.wait()
            flat /= world
            offset = 0
            for p in buckets[index]:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()

    return finish


def accumulate_by_hand(ddp_model, micro_batches):
    """No DDP all-reduce at all: the learner's own, after no_sync everywhere."""
    with ddp_model.no_sync():
        for X, y in micro_batches:
            (torch.nn.functional.mse_loss(ddp_model(X), y) / len(micro_batches)).backward()
    sync_gradients(ddp_model.module)


def accumulate_summed(ddp_model, micro_batches):
    with ddp_model.no_sync():
        for X, y in micro_batches[:-1]:
            torch.nn.functional.mse_loss(ddp_model(X), y).backward()
    X, y = micro_batches[-1]
    torch.nn.functional.mse_loss(ddp_model(X), y).backward()


def accumulate_syncing_every_time(ddp_model, micro_batches):
    for X, y in micro_batches:
        (torch.nn.functional.mse_loss(ddp_model(X), y) / len(micro_batches)).backward()


def accumulate_never_syncing(ddp_model, micro_batches):
    with ddp_model.no_sync():
        for X, y in micro_batches:
            (torch.nn.functional.mse_loss(ddp_model(X), y) / len(micro_batches)).backward()


def accumulate_zeroing(ddp_model, micro_batches):
    with ddp_model.no_sync():
        for X, y in micro_batches[:-1]:
            ddp_model.zero_grad()
            torch.nn.functional.mse_loss(ddp_model(X), y).backward()
    ddp_model.zero_grad()
    X, y = micro_batches[-1]
    torch.nn.functional.mse_loss(ddp_model(X), y).backward()


def zero_summed(flat_param, flat_grad, momentum, lr, beta):
    world, rank = dist.get_world_size(), dist.get_rank()
    n = flat_param.numel() // world
    g = torch.empty(n, dtype=flat_grad.dtype)
    dist.reduce_scatter_single(g, flat_grad)
    momentum.mul_(beta).add_(g)
    mine = flat_param[rank * n : (rank + 1) * n] - lr * momentum
    dist.all_gather_single(flat_param, mine.contiguous())


def zero_no_gather(flat_param, flat_grad, momentum, lr, beta):
    world, rank = dist.get_world_size(), dist.get_rank()
    n = flat_param.numel() // world
    g = torch.empty(n, dtype=flat_grad.dtype)
    dist.reduce_scatter_single(g, flat_grad)
    momentum.mul_(beta).add_(g / world)
    flat_param[rank * n : (rank + 1) * n] -= lr * momentum


def zero_local(flat_param, flat_grad, momentum, lr, beta):
    world, rank = dist.get_world_size(), dist.get_rank()
    n = flat_param.numel() // world
    momentum.mul_(beta).add_(flat_grad[rank * n : (rank + 1) * n])
    mine = flat_param[rank * n : (rank + 1) * n] - lr * momentum
    dist.all_gather_single(flat_param, mine.contiguous())


def memory_without_optimizer(n, world, stage):
    out = bytes_per_gpu(n, world, stage)
    out["optimizer"] = 0.0
    return out


def memory_without_master(n, world, stage):
    out = bytes_per_gpu(n, world, stage)
    out["optimizer"] *= 8 / 12
    return out


def memory_fp32(n, world, stage):
    out = bytes_per_gpu(n, world, stage)
    out["weights"] *= 2
    out["gradients"] *= 2
    return out


def memory_all_sharded(n, world, stage):
    return {k: v / world for k, v in bytes_per_gpu(n, world, 0).items()}


def tp_no_allreduce(x, A, B, grad_y):
    h = torch.tanh(x @ A)
    dh = (grad_y @ B.T) * (1 - h**2)
    return dh @ A.T, x.T @ dh, h.T @ grad_y


def tp_averaged(x, A, B, grad_y):
    grad_x, grad_A, grad_B = tp_mlp_backward(x, A, B, grad_y)
    return grad_x / dist.get_world_size(), grad_A, grad_B


def tp_reduce_grad_y(x, A, B, grad_y):
    grad_y = grad_y.clone()
    dist.all_reduce(grad_y)
    return tp_mlp_backward(x, A, B, grad_y)


def tp_reduce_weights(x, A, B, grad_y):
    grad_x, grad_A, grad_B = tp_mlp_backward(x, A, B, grad_y)
    dist.all_reduce(grad_A)
    dist.all_reduce(grad_B)
    return grad_x, grad_A, grad_B


def swiglu_sigmoid_only(x, W, V, grad_out):
    a, b = x @ W, x @ V
    s = torch.sigmoid(a)
    db = grad_out * a * s
    da = grad_out * b * s
    return da @ W.T + db @ V.T, x.T @ da, x.T @ db


def swiglu_one_path(x, W, V, grad_out):
    a, b = x @ W, x @ V
    s = torch.sigmoid(a)
    db = grad_out * a * s
    da = grad_out * b * s * (1 + a * (1 - s))
    return db @ V.T, x.T @ da, x.T @ db


WRONG_ANSWERS = [
    ("14.allreduce_grads", sync_summed, "summed instead of averaged"),
    ("14.allreduce_grads", sync_nothing, "nothing was all-reduced"),
    ("14.allreduce_grads", sync_broadcast, "broadcast"),
    ("14.allreduce_grads", sync_raises, "ValueError: not yet"),
    ("14.bucketed_allreduce", overlap_after_backward, "started while backward ran"),
    ("14.bucketed_allreduce", overlap_too_early, "before backward had written"),
    ("14.bucketed_allreduce", lambda model, buckets: None, "is a `return finish` missing?"),
    ("14.bucketed_allreduce", lambda model, buckets: 3, "should return a function"),
    ("14.accumulate_no_sync", accumulate_summed, "summed the micro-batch losses"),
    ("14.accumulate_no_sync", accumulate_by_hand, "DDP never all-reduced"),
    ("14.accumulate_no_sync", accumulate_syncing_every_time, "once per micro-batch"),
    ("14.accumulate_no_sync", accumulate_backward_only_in_no_sync, "forward AND backward"),
    ("14.accumulate_no_sync", accumulate_never_syncing, "nothing was all-reduced"),
    ("14.accumulate_no_sync", accumulate_zeroing, "only the last micro-batch"),
    ("14.zero_step", zero_summed, "summed instead of averaged"),
    ("14.zero_step", zero_no_gather, "all-gather the slices"),
    ("14.zero_step", zero_local, "never reduce-scattered"),
    ("14.memory_budget", memory_without_optimizer, "forgot the optimizer state"),
    ("14.memory_budget", memory_without_master, "forgot the fp32 master weights"),
    ("14.memory_budget", memory_fp32, "counted fp32"),
    ("14.memory_budget", memory_all_sharded, "too early"),
    ("14.memory_budget", lambda n, w, s: bytes_per_gpu(n, w, 0), "did not shard"),
    ("14.memory_budget", lambda n, w, s: None, "is a `return` missing?"),
    ("14.tp_backward", tp_no_allreduce, "forgot the backward all-reduce"),
    ("14.tp_backward", tp_averaged, "sum, not mean"),
    ("14.tp_backward", tp_reduce_grad_y, "the wrong direction"),
    ("14.tp_backward", tp_reduce_weights, "each rank owns its slices"),
    ("14.tp_backward", lambda x, A, B, g: None, "is a `return` missing?"),
    ("14.tp_backward", lambda x, A, B, g: x, "should return a tuple"),
    ("14.swiglu_backward", swiglu_sigmoid_only, "product rule"),
    ("14.swiglu_backward", swiglu_one_path, "add the gate's path"),
    ("14.swiglu_backward", lambda x, W, V, g: None, "is a `return` missing?"),
]

# ---------------------------------------------------------------- shortcuts


def tp_by_autograd(x, A, B, grad_y):
    x, A, B = (t.clone().requires_grad_() for t in (x, A, B))
    torch.autograd.backward(torch.tanh(x @ A) @ B, grad_y)
    dist.all_reduce(x.grad)
    return x.grad, A.grad, B.grad


def swiglu_by_autograd(x, W, V, grad_out):
    x, W, V = (t.clone().requires_grad_() for t in (x, W, V))
    out = torch.nn.functional.silu(x @ W) * (x @ V)
    return torch.autograd.grad(out, (x, W, V), grad_out)


def memory_by_the_package(n, world, stage):
    from backprop_course import scale

    out = bytes_per_gpu(n, world, stage)
    scale.state_bytes(n)
    return out


SHORTCUTS = [
    ("14.tp_backward", tp_by_autograd, "by hand"),
    ("14.swiglu_backward", swiglu_by_autograd, "by hand"),
    ("14.memory_budget", memory_by_the_package, "backprop_course.scale"),
]

# the checks that start processes draw fewer inputs (each draw starts 2-5 processes)
SEEDS = {
    "14.allreduce_grads": 1,
    "14.bucketed_allreduce": 2,
    "14.accumulate_no_sync": 1,
    "14.zero_step": 2,
    "14.tp_backward": 2,
    "14.swiglu_backward": 5,
}

globals().update(
    lesson_feedback_tests(
        "14",
        CORRECT_ANSWERS,
        WRONG_ANSWERS,
        several=True,
        shortcuts=SHORTCUTS,
        ruled=("14.tp_backward", "14.swiglu_backward"),
        correct_seeds=SEEDS,
        wrong_seeds=1,
    )
)
