"""nn: numpy layers with hand-written backward passes, checked against torch autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backprop_course.bench import bench_mlp
from backprop_course.gradcheck import check_gradient, compare_gradients
from backprop_course.nn import (
    MLP,
    BatchNorm1d,
    LayerNorm,
    Linear,
    MSELoss,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    softmax,
)

SHAPES = [(1, 1), (4, 3), (16, 7), (33, 20)]


def t64(array: np.ndarray, grad: bool = True) -> torch.Tensor:
    """A float64 leaf tensor holding a copy of ``array``."""
    return torch.tensor(array, dtype=torch.float64, requires_grad=grad)


def assert_matches(ours, expected, name: str, tolerance: float = 1e-6) -> None:
    """Elementwise relative error at most ``tolerance``; the report names the worst element."""
    report = compare_gradients(ours, expected, tolerance=tolerance, name=name)
    assert report.passed, str(report)


# ---------------------------------------------------------------- Linear and activations


@pytest.mark.parametrize(("batch", "n_in"), SHAPES)
@pytest.mark.parametrize("n_out", [1, 5])
def test_linear_backward_matches_torch(batch, n_in, n_out):
    """Linear's dx, dW and db equal torch autograd's for y = x @ W + b."""
    rng = np.random.default_rng(batch * 100 + n_in * 10 + n_out)
    layer = Linear(n_in, n_out, rng=rng)
    layer.b[:] = rng.normal(size=n_out)
    x, dy = rng.normal(size=(batch, n_in)), rng.normal(size=(batch, n_out))
    y = layer(x)
    dx = layer.backward(dy)
    tx, tW, tb = t64(x), t64(layer.W), t64(layer.b)
    ty = tx @ tW + tb
    ty.backward(torch.from_numpy(dy))
    assert_matches(y, ty, "y")
    assert_matches(dx, tx.grad, "dx")
    assert_matches(layer.dW, tW.grad, "dW")
    assert_matches(layer.db, tb.grad, "db")


@pytest.mark.parametrize(
    ("layer_type", "torch_fn"),
    [(ReLU, torch.relu), (Sigmoid, torch.sigmoid), (Tanh, torch.tanh)],
)
@pytest.mark.parametrize("shape", [(5,), (8, 3), (4, 6, 2)])
def test_activation_backward_matches_torch(layer_type, torch_fn, shape):
    """Each activation's forward and dx equal torch's, for any input shape."""
    rng = np.random.default_rng(len(shape))
    x, dy = rng.normal(scale=3, size=shape), rng.normal(size=shape)
    layer = layer_type()
    y = layer(x)
    dx = layer.backward(dy)
    tx = t64(x)
    ty = torch_fn(tx)
    ty.backward(torch.from_numpy(dy))
    assert_matches(y, ty, "y")
    assert_matches(dx, tx.grad, "dx")


def test_sigmoid_does_not_overflow():
    """Sigmoid of very large inputs is exactly 0 or 1, with no overflow warning."""
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        y = Sigmoid()(np.array([[-1000.0, 0.0, 1000.0]], dtype=np.float32))
    np.testing.assert_allclose(y, [[0.0, 0.5, 1.0]])


# ---------------------------------------------------------------- normalisation


def _torch_batchnorm(bn: BatchNorm1d) -> torch.nn.BatchNorm1d:
    tbn = torch.nn.BatchNorm1d(
        bn.num_features, eps=bn.eps, momentum=bn.momentum, dtype=torch.float64
    )
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(bn.gamma))
        tbn.bias.copy_(torch.from_numpy(bn.beta))
    return tbn


@pytest.mark.parametrize(("batch", "features"), [(2, 1), (4, 3), (16, 7), (64, 20)])
def test_batchnorm_train_backward_matches_torch(batch, features):
    """BatchNorm1d in training mode: y, dx, dgamma, dbeta and running stats equal torch's."""
    rng = np.random.default_rng(batch + features)
    bn = BatchNorm1d(features)
    bn.gamma[:] = rng.normal(size=features)
    bn.beta[:] = rng.normal(size=features)
    tbn = _torch_batchnorm(bn)
    x = rng.normal(loc=2, scale=3, size=(batch, features))
    dy = rng.normal(size=(batch, features))
    y = bn(x)
    dx = bn.backward(dy)
    tx = t64(x)
    ty = tbn(tx)
    ty.backward(torch.from_numpy(dy))
    assert_matches(y, ty, "y")
    assert_matches(dx, tx.grad, "dx")
    assert_matches(bn.dgamma, tbn.weight.grad, "dgamma")
    assert_matches(bn.dbeta, tbn.bias.grad, "dbeta")
    assert_matches(bn.running_mean, tbn.running_mean, "running_mean")
    assert_matches(bn.running_var, tbn.running_var, "running_var")


def test_batchnorm_eval_uses_running_statistics_like_torch():
    """After a few training batches, eval-mode forward and backward equal torch's."""
    rng = np.random.default_rng(7)
    bn = BatchNorm1d(6, momentum=0.2)
    bn.gamma[:] = rng.normal(size=6)
    tbn = _torch_batchnorm(bn)
    for _ in range(5):
        x = rng.normal(loc=1, scale=2, size=(10, 6))
        bn(x)
        tbn(t64(x, grad=False))
    bn.eval()
    tbn.eval()
    x, dy = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    y = bn(x)
    dx = bn.backward(dy)
    tx = t64(x)
    ty = tbn(tx)
    ty.backward(torch.from_numpy(dy))
    assert_matches(bn.running_var, tbn.running_var, "running_var")
    assert_matches(y, ty, "eval y")
    assert_matches(dx, tx.grad, "eval dx")
    assert_matches(bn.dgamma, tbn.weight.grad, "eval dgamma")
    # evaluation mode also accepts a single example
    assert bn(x[:1]).shape == (1, 6)


@pytest.mark.parametrize("shape", [(1, 4), (8, 5), (3, 4, 6)])
def test_layernorm_backward_matches_torch(shape):
    """LayerNorm over the last axis: y, dx, dgamma and dbeta equal torch's."""
    rng = np.random.default_rng(sum(shape))
    features = shape[-1]
    ln = LayerNorm(features)
    ln.gamma[:] = rng.normal(size=features)
    ln.beta[:] = rng.normal(size=features)
    tln = torch.nn.LayerNorm(features, eps=ln.eps, dtype=torch.float64)
    with torch.no_grad():
        tln.weight.copy_(torch.from_numpy(ln.gamma))
        tln.bias.copy_(torch.from_numpy(ln.beta))
    x, dy = rng.normal(loc=-1, scale=2, size=shape), rng.normal(size=shape)
    y = ln(x)
    dx = ln.backward(dy)
    tx = t64(x)
    ty = tln(tx)
    ty.backward(torch.from_numpy(dy))
    assert_matches(y, ty, "y")
    assert_matches(dx, tx.grad, "dx")
    assert_matches(ln.dgamma, tln.weight.grad, "dgamma")
    assert_matches(ln.dbeta, tln.bias.grad, "dbeta")


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("shape", [(5,), (6, 1), (4, 3)])
def test_mse_loss_matches_torch(shape):
    """MSELoss is the mean over all elements and its gradient equals torch's."""
    rng = np.random.default_rng(len(shape))
    y_hat, y = rng.normal(size=shape), rng.normal(size=shape)
    loss_fn = MSELoss()
    loss = loss_fn(y_hat, y)
    grad = loss_fn.backward()
    t_hat = t64(y_hat)
    t_loss = torch.nn.functional.mse_loss(t_hat, torch.from_numpy(y))
    t_loss.backward()
    assert isinstance(loss, float)
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    assert_matches(grad, t_hat.grad, "d y_hat")


@pytest.mark.parametrize(("batch", "classes"), [(1, 2), (5, 3), (32, 10)])
def test_softmax_cross_entropy_matches_torch(batch, classes):
    """The loss, (softmax - onehot) / B and softmax itself equal torch's."""
    rng = np.random.default_rng(batch * classes)
    logits = rng.normal(scale=4, size=(batch, classes))
    targets = rng.integers(0, classes, size=batch)
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn(logits, targets)
    dlogits = loss_fn.backward()
    t_logits = t64(logits)
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(targets))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    assert_matches(dlogits, t_logits.grad, "dlogits")
    assert_matches(softmax(logits), torch.softmax(t64(logits, grad=False), dim=-1), "softmax")


def test_softmax_cross_entropy_is_stable_in_float32():
    """Huge, confidently wrong float32 logits give a finite float32 loss and gradient."""
    logits = np.array([[1000.0, -1000.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    loss_fn = SoftmaxCrossEntropy()
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        loss = loss_fn(logits, np.array([1, 2]))
        dlogits = loss_fn.backward()
    assert loss == pytest.approx((2000 + np.log(3)) / 2, rel=1e-6)
    assert dlogits.dtype == np.float32 and np.isfinite(dlogits).all()
    assert softmax(logits).dtype == np.float32


# ---------------------------------------------------------------- whole networks


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_mlp_backward_matches_torch(activation):
    """Every parameter gradient and dx of a whole MLP with softmax-CE equal torch's."""
    rng = np.random.default_rng(3)
    model = MLP([4, 16, 8, 3], activation=activation, rng=1)
    x, targets = rng.normal(size=(12, 4)), rng.integers(0, 3, size=12)
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn(model(x), targets)
    dx = model.backward(loss_fn.backward())

    tx = t64(x)
    t_params = [t64(p) for p in model.parameters()]
    act = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[activation]
    h = tx
    for i in range(0, len(t_params), 2):
        h = h @ t_params[i] + t_params[i + 1]
        if i < len(t_params) - 2:
            h = act(h)
    t_loss = torch.nn.functional.cross_entropy(h, torch.from_numpy(targets))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    assert_matches(dx, tx.grad, "dx")
    for i, (ours, tp) in enumerate(zip(model.gradients(), t_params, strict=True)):
        assert_matches(ours, tp.grad, f"gradient {i}")


def test_sequential_with_normalisation_matches_torch():
    """Linear, BatchNorm1d, Tanh, Linear, LayerNorm: parameter gradients equal torch's."""
    rng = np.random.default_rng(11)
    model = Sequential(
        Linear(5, 6, rng=0), BatchNorm1d(6), Tanh(), Linear(6, 4, rng=1), LayerNorm(4)
    )
    x, dy = rng.normal(size=(9, 5)), rng.normal(size=(9, 4))
    model(x)
    model.backward(dy)
    torch_model = torch.nn.Sequential(
        torch.nn.Linear(5, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh(),
        torch.nn.Linear(6, 4), torch.nn.LayerNorm(4),
    ).double()  # fmt: skip
    with torch.no_grad():
        for index in (0, 3):
            torch_model[index].weight.copy_(torch.from_numpy(model[index].W.T))
            torch_model[index].bias.copy_(torch.from_numpy(model[index].b))
    torch_model(t64(x, grad=False)).backward(torch.from_numpy(dy))
    expected = []
    for module in torch_model:
        if isinstance(module, torch.nn.Linear):
            expected += [module.weight.grad.T, module.bias.grad]
        elif isinstance(module, (torch.nn.BatchNorm1d, torch.nn.LayerNorm)):
            expected += [module.weight.grad, module.bias.grad]
    assert len(expected) == len(model.gradients()) == len(model.parameters())
    grads = model.gradients()
    # BatchNorm subtracts the batch mean, so the bias before it has no effect: gradient 0
    np.testing.assert_allclose(grads[1], 0, atol=1e-12)
    np.testing.assert_allclose(expected[1], 0, atol=1e-12)
    for i, (ours, theirs) in enumerate(zip(grads, expected, strict=True)):
        if i != 1:
            assert_matches(ours, theirs, f"gradient {i}")


# ---------------------------------------------------------------- numerical checks


def test_linear_numerical_gradient():
    """Central differences of sum(Linear(x) * dy) agree with dW, db and dx."""
    rng = np.random.default_rng(0)
    layer = Linear(3, 4, rng=rng)
    x, dy = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
    layer(x)
    dx = layer.backward(dy)
    dW, db = layer.dW.copy(), layer.db.copy()

    def loss(_):
        return np.sum(layer.forward(x) * dy)

    assert check_gradient(loss, layer.W, dW, name="dW")
    assert check_gradient(loss, layer.b, db, name="db")
    assert check_gradient(lambda a: np.sum(layer.forward(a) * dy), x, dx, name="dx")


@pytest.mark.parametrize("layer_type", [BatchNorm1d, LayerNorm])
def test_normalisation_numerical_gradient(layer_type):
    """Central differences agree with the closed-form dx, dgamma and dbeta."""
    rng = np.random.default_rng(1)
    layer = layer_type(4)
    layer.gamma[:] = rng.normal(size=4)
    layer.beta[:] = rng.normal(size=4)
    x, dy = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    layer(x)
    dx = layer.backward(dy)
    dgamma, dbeta = layer.dgamma.copy(), layer.dbeta.copy()

    def loss(a):
        return np.sum(layer.forward(a) * dy)

    assert check_gradient(loss, x, dx, name="dx")
    assert check_gradient(lambda _: loss(x), layer.gamma, dgamma, name="dgamma")
    assert check_gradient(lambda _: loss(x), layer.beta, dbeta, name="dbeta")


# ---------------------------------------------------------------- API and validation


def test_sequential_api():
    """Sequential indexes its layers and lists parameters and gradients in the same order."""
    model = MLP([2, 8, 8, 3], rng=0)
    assert len(model) == 5 and isinstance(model[1], ReLU) and isinstance(model[-1], Linear)
    assert [type(layer) for layer in model] == [Linear, ReLU, Linear, ReLU, Linear]
    assert isinstance(model, Sequential)
    params, grads = model.parameters(), model.gradients()
    assert len(params) == 6
    assert [p.shape for p in params] == [g.shape for g in grads]
    assert params[0].shape == (2, 8) and params[1].shape == (8,)
    assert model.name == "MLP(2-8-8-3, relu)" and model[0].name == "Linear(2 -> 8)"
    assert "Linear(8 -> 3)" in repr(model)
    assert ReLU().parameters() == [] and ReLU().gradients() == []


def test_gradients_are_updated_in_place():
    """gradients() returns the same arrays after every backward, so optimizers can hold them."""
    model = MLP([3, 4, 2], rng=0)
    grads = model.gradients()
    x = np.ones((2, 3))
    model(x)
    model.backward(np.ones((2, 2)))
    assert all(a is b for a, b in zip(grads, model.gradients(), strict=True))
    assert np.any(grads[0] != 0)


def test_input_grad_false_skips_dx_only():
    """backward(..., input_grad=False) returns None and stores the same parameter gradients."""
    rng = np.random.default_rng(2)
    model = MLP([5, 7, 3], rng=0)
    x, dy = rng.normal(size=(4, 5)), rng.normal(size=(4, 3))
    model(x)
    assert model.backward(dy) is not None
    expected = [g.copy() for g in model.gradients()]
    assert model.backward(dy, input_grad=False) is None
    for ours, theirs in zip(model.gradients(), expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_train_eval_propagate():
    """train() and eval() reach every layer of a Sequential and return it."""
    model = Sequential(Linear(2, 3, rng=0), BatchNorm1d(3))
    assert model.eval() is model and not model[1].training
    assert model.train() is model and model[1].training


@pytest.mark.parametrize(
    ("init", "std"), [("he", np.sqrt(2 / 400)), ("glorot", np.sqrt(2 / 600)), ("normal", 1.0)]
)
def test_linear_init_scale(init, std):
    """Weights have the init's standard deviation, biases start at zero."""
    layer = Linear(400, 200, init=init, rng=0)
    assert layer.W.std() == pytest.approx(std, rel=0.02)
    assert not layer.b.any()
    assert Linear(400, 200, init=0.01, rng=0).W.std() == pytest.approx(0.01, rel=0.02)


def test_seed_fixes_weights_in_both_dtypes():
    """The same seed gives the same network; float32 holds the float64 weights rounded."""
    first = MLP([3, 5, 2], rng=4).parameters()
    again = MLP([3, 5, 2], rng=4).parameters()
    single = MLP([3, 5, 2], rng=4, dtype=np.float32).parameters()
    for a, b, c in zip(first, again, single, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a.astype(np.float32), c)


def test_float32_is_kept_through_forward_and_backward():
    """A float32 network computes, returns and stores float32 everywhere (no upcasting)."""
    rng = np.random.default_rng(0)
    model = Sequential(
        Linear(6, 8, rng=0, dtype=np.float32),
        BatchNorm1d(8, dtype=np.float32),
        Sigmoid(),
        Linear(8, 8, rng=1, dtype=np.float32),
        LayerNorm(8, dtype=np.float32),
        Tanh(),
        Linear(8, 3, rng=2, dtype=np.float32),
        ReLU(),
    )
    x = rng.normal(size=(5, 6)).astype(np.float32)
    logits = model(x)
    loss_fn = SoftmaxCrossEntropy()
    loss_fn(logits, np.array([0, 1, 2, 0, 1]))
    dx = model.backward(loss_fn.backward())
    assert logits.dtype == dx.dtype == np.float32
    assert all(a.dtype == np.float32 for a in model.parameters() + model.gradients())
    mse = MSELoss()
    mse(logits, np.zeros((5, 3)))
    assert mse.backward().dtype == np.float32


def test_wrong_shape_names_layer_and_shapes():
    """A wrong feature count or ndim: ValueError naming the layer, expected and received shape."""
    layer = Linear(784, 256, rng=0)
    with pytest.raises(ValueError) as error:
        layer(np.zeros((32, 10)))
    assert (
        str(error.value) == "Linear(784 -> 256) expects input of shape (batch, 784), got (32, 10)"
    )
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 784\), got \(784,\)"):
        layer(np.zeros(784))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4\) expects input of shape \(batch, 4\)"):
        BatchNorm1d(4)(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"LayerNorm\(4\) expects input of shape \(\.\.\., 4\)"):
        LayerNorm(4)(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"MLP\(2-3-1, relu\)|Linear\(2 -> 3\)"):
        MLP([2, 3, 1], rng=0)(np.zeros((4, 3)))


def test_wrong_dtype_is_refused():
    """Integer input, or float64 input to a float32 layer, is a ValueError saying how to fix it."""
    with pytest.raises(ValueError, match=r"Linear\(3 -> 2\) expects a floating-point array, got"):
        Linear(3, 2, rng=0)(np.zeros((4, 3), dtype=int))
    with pytest.raises(ValueError, match=r"expects float32 input, got float64.*astype"):
        Linear(3, 2, rng=0, dtype=np.float32)(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="ReLU expects a floating-point array"):
        ReLU()(np.arange(3))


def test_backward_before_forward_is_a_runtime_error():
    """Every layer and loss refuses backward() before any forward()."""
    for layer in (Linear(2, 2, rng=0), ReLU(), Sigmoid(), Tanh(), BatchNorm1d(2), LayerNorm(2)):
        with pytest.raises(RuntimeError, match=r"backward\(\) was called before forward\(\)"):
            layer.backward(np.zeros((1, 2)))
    for loss_fn in (MSELoss(), SoftmaxCrossEntropy()):
        with pytest.raises(RuntimeError, match="before forward"):
            loss_fn.backward()


def test_backward_checks_dy():
    """dy of the wrong shape or dtype is a ValueError naming the expected one."""
    layer = Linear(3, 2, rng=0)
    layer(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"expects dy of shape \(4, 2\).*got \(4, 3\)"):
        layer.backward(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"expects dy of dtype float64.*got float32"):
        layer.backward(np.zeros((4, 2), dtype=np.float32))


def test_other_validation_messages():
    """Bad constructor arguments, targets and batch sizes get specific messages."""
    with pytest.raises(ValueError, match="init must be one of"):
        Linear(2, 2, init="xavier")
    with pytest.raises(ValueError, match="activation must be one of"):
        MLP([2, 2], activation="gelu")
    with pytest.raises(ValueError, match="at least 2 rows"):
        BatchNorm1d(3)(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"integer targets of shape \(2,\)"):
        SoftmaxCrossEntropy()(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        SoftmaxCrossEntropy()(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"targets of the prediction's shape \(2, 1\)"):
        MSELoss()(np.zeros((2, 1)), np.zeros(2))


def test_a_small_mlp_learns():
    """Plain SGD on a hand-written MLP fits a noisy sine curve (the loss falls tenfold)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(128, 1))
    y = np.sin(x) + 0.05 * rng.normal(size=x.shape)
    model, loss_fn = MLP([1, 32, 32, 1], activation="tanh", init="glorot", rng=0), MSELoss()
    losses = []
    for _ in range(500):
        losses.append(loss_fn(model(x), y))
        model.backward(loss_fn.backward(), input_grad=False)
        for p, g in zip(model.parameters(), model.gradients(), strict=True):
            p -= 0.1 * g
    assert losses[-1] < 0.1 * losses[0]


def test_bench_mlp_reports_the_contract_fields():
    """bench mlp returns numpy_ms, torch_ms, ratio, threads and the machine (no timing claims)."""
    result = bench_mlp(repeats=2, rounds=1)
    assert result["numpy_ms"] > 0 and result["torch_ms"] > 0
    assert result["ratio"] == pytest.approx(result["numpy_ms"] / result["torch_ms"], rel=0.01)
    assert result["threads"] == torch.get_num_threads()
    assert result["same_loss"] is True
    assert "cpu_count" in result["machine"]
