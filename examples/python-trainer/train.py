#!/usr/bin/env python3
"""An external trainer for RingRift: reads the export job's NPZ files, trains a small
policy/value network, writes it as ONNX and the result JSON of a `train` job.

It is a `[jobs] train` template (see README.md and docs/jobs.md):

    python3 examples/python-trainer/train.py --config {config_key} --data {data}
        --output {output} --result {result} --generation {generation} --epochs {epochs}

numpy is required; PyTorch is used for training when it is installed (`--backend`), and
the ONNX graph is built from the numpy weights with `onnx.helper` either way, so the file
is the same contract: input `board` f32 [N, planes*cells], outputs `value` f32 [N, 1]
(tanh, for the player to move) and `policy` f32 [N, cells] (logits), metadata
`ringrift.config_key` and `ringrift.generation`.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time

import numpy as np

REPORT_VERSION = 1


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="config key, e.g. hex8_2p")
    p.add_argument("--data", required=True, nargs="+", help="NPZ files, newest first")
    p.add_argument("--output", required=True, help="the .onnx model to write")
    p.add_argument("--result", required=True, help="the result JSON to write")
    p.add_argument("--generation", type=int, default=0)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--init", default="", help="ignored: this trainer starts fresh")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--backend", choices=["auto", "numpy", "torch"], default="auto")
    return p.parse_args(argv)


def load(paths):
    """features [N, P*C] f32, values [N] f32, dense policy targets [N, C] f32."""
    feats, vals, pols = [], [], []
    planes = cells = None
    for path in paths:
        with np.load(path) as z:
            missing = {"features", "values", "policy_indices", "policy_values"} - set(z.files)
            if missing:
                sys.exit(f"{path}: not an export NPZ (missing {sorted(missing)})")
            f = z["features"].astype(np.float32)
            if f.ndim != 3:
                sys.exit(f"{path}: features has shape {f.shape}, expected [N, P, C]")
            if planes is None:
                planes, cells = f.shape[1], f.shape[2]
            elif (planes, cells) != f.shape[1:]:
                sys.exit(f"{path}: features {f.shape[1:]} differ from {(planes, cells)}")
            n = f.shape[0]
            idx, pv = z["policy_indices"], z["policy_values"].astype(np.float32)
            dense = np.zeros((n, cells), np.float32)
            rows = np.repeat(np.arange(n), idx.shape[1])
            keep = idx.reshape(-1) >= 0
            np.add.at(dense, (rows[keep], idx.reshape(-1)[keep]), pv.reshape(-1)[keep])
            dense *= f.sum(axis=1) == 0  # targets on empty cells only
            s = dense.sum(axis=1, keepdims=True)
            dense = np.where(s > 0, dense / np.maximum(s, 1e-12), 0.0)
            feats.append(f.reshape(n, planes * cells))
            vals.append(z["values"].astype(np.float32))
            pols.append(dense)
    if planes is None or sum(len(v) for v in vals) == 0:
        sys.exit("no training rows in " + " ".join(paths))
    return np.concatenate(feats), np.concatenate(vals), np.concatenate(pols), planes, cells


class Net:
    """board -> ReLU(hidden) -> value (tanh) and policy logits; numpy weights."""

    def __init__(self, inputs, hidden, cells, rng):
        self.w1 = (rng.standard_normal((inputs, hidden)) * np.sqrt(2.0 / inputs)).astype(np.float32)
        self.b1 = np.zeros(hidden, np.float32)
        self.wv = (rng.standard_normal((hidden, 1)) * np.sqrt(1.0 / hidden)).astype(np.float32)
        self.bv = np.zeros(1, np.float32)
        self.wp = (rng.standard_normal((hidden, cells)) * np.sqrt(1.0 / hidden)).astype(np.float32)
        self.bp = np.zeros(cells, np.float32)

    def params(self):
        return [self.w1, self.b1, self.wv, self.bv, self.wp, self.bp]

    def forward(self, x):
        h = np.maximum(x @ self.w1 + self.b1, 0.0)
        return h, np.tanh(h @ self.wv + self.bv)[:, 0], h @ self.wp + self.bp


def masked_log_softmax(logits, x, cells):
    """Log-softmax over the empty cells of each board (occupied cells get -inf)."""
    occupied = x.reshape(x.shape[0], -1, cells).sum(axis=1) > 0
    z = np.where(occupied, -1e9, logits)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def losses(net, x, v, p, cells):
    _, pv, logits = net.forward(x)
    mse = float(np.mean((pv - v) ** 2))
    logp = masked_log_softmax(logits, x, cells)
    has = p.sum(axis=1) > 0
    ce = float(-(p * np.where(p > 0, logp, 0.0)).sum(axis=1)[has].mean()) if has.any() else 0.0
    top1 = float((logp.argmax(axis=1) == p.argmax(axis=1))[has].mean()) if has.any() else 0.0
    return mse, ce, top1


def train_numpy(net, x, v, p, cells, args, rng):
    """Adam on value MSE + policy cross-entropy; returns the last epoch's mean loss."""
    m = [np.zeros_like(w) for w in net.params()]
    s = [np.zeros_like(w) for w in net.params()]
    step, last = 0, 0.0
    for _ in range(args.epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for at in range(0, len(x), args.batch):
            b = order[at:at + args.batch]
            xb, vb, pb = x[b], v[b], p[b]
            n = len(b)
            h, pv, logits = net.forward(xb)
            logp = masked_log_softmax(logits, xb, cells)
            has = (pb.sum(axis=1) > 0).astype(np.float32)[:, None]
            total += float(np.sum((pv - vb) ** 2) - np.sum(pb * np.where(pb > 0, logp, 0.0)))
            dv = (2.0 * (pv - vb) * (1.0 - pv ** 2) / n)[:, None]
            dl = (np.exp(logp) - pb) * has / n
            dh = (dv @ net.wv.T + dl @ net.wp.T) * (h > 0)
            grads = [xb.T @ dh, dh.sum(0), h.T @ dv, dv.sum(0), h.T @ dl, dl.sum(0)]
            step += 1
            for i, (w, g) in enumerate(zip(net.params(), grads)):
                m[i] = 0.9 * m[i] + 0.1 * g
                s[i] = 0.999 * s[i] + 0.001 * g * g
                mh, sh = m[i] / (1 - 0.9 ** step), s[i] / (1 - 0.999 ** step)
                w -= (args.lr * mh / (np.sqrt(sh) + 1e-8)).astype(np.float32)
        last = total / max(len(x), 1)
    return last


def train_torch(net, x, v, p, cells, args):
    import torch

    torch.manual_seed(args.seed)
    ws = [torch.tensor(w, requires_grad=True) for w in net.params()]
    opt = torch.optim.Adam(ws, lr=args.lr)
    X, V, P = torch.tensor(x), torch.tensor(v), torch.tensor(p)
    occupied = X.reshape(len(X), -1, cells).sum(1) > 0
    last = 0.0
    for _ in range(args.epochs):
        order = torch.randperm(len(X))
        total = 0.0
        for at in range(0, len(X), args.batch):
            b = order[at:at + args.batch]
            h = torch.relu(X[b] @ ws[0] + ws[1])
            pv = torch.tanh(h @ ws[2] + ws[3])[:, 0]
            logits = (h @ ws[4] + ws[5]).masked_fill(occupied[b], -1e9)
            logp = torch.log_softmax(logits, 1)
            loss = ((pv - V[b]) ** 2).sum() - (P[b] * torch.where(P[b] > 0, logp, 0.0)).sum()
            opt.zero_grad()
            (loss / len(b)).backward()
            opt.step()
            total += float(loss)
        last = total / max(len(X), 1)
    for w, t in zip(net.params(), ws):
        w[...] = t.detach().numpy()
    return last


def onnx_model(net, planes, cells, config, generation):
    """The ONNX graph of `net` (opset 13) with the RingRift metadata."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(w, name) for w, name in zip(
        net.params(), ["w1", "b1", "wv", "bv", "wp", "bp"])]
    nodes = [
        helper.make_node("Gemm", ["board", "w1", "b1"], ["h_pre"]),
        helper.make_node("Relu", ["h_pre"], ["h"]),
        helper.make_node("Gemm", ["h", "wv", "bv"], ["v_pre"]),
        helper.make_node("Tanh", ["v_pre"], ["value"]),
        helper.make_node("Gemm", ["h", "wp", "bp"], ["policy"]),
    ]
    graph = helper.make_graph(
        nodes, "ringrift_value",
        [helper.make_tensor_value_info("board", TensorProto.FLOAT, ["N", planes * cells])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", 1]),
         helper.make_tensor_value_info("policy", TensorProto.FLOAT, ["N", cells])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="ringrift-python-trainer")
    model.ir_version = 8
    helper.set_model_props(model, {"ringrift.config_key": config,
                                   "ringrift.generation": str(generation)})
    return model


def atomic_write(path, data):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv):
    args = parse_args(argv)
    if not args.output.endswith(".onnx"):
        sys.exit(f"--output {args.output}: this trainer writes ONNX (set [jobs] model_format = \"onnx\")")
    import onnx  # noqa: F401 (fail early, before training, when it is missing)

    backend = args.backend
    if backend == "auto":
        try:
            import torch  # noqa: F401
            backend = "torch"
        except ImportError:
            backend = "numpy"
    started = time.time()
    x, v, p, planes, cells = load(args.data)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(x))
    n_val = max(1, len(x) // 10) if len(x) > 1 else 0
    val, tr = order[:n_val], order[n_val:]
    net = Net(planes * cells, args.hidden, cells, rng)
    if backend == "torch":
        train_loss = train_torch(net, x[tr], v[tr], p[tr], cells, args)
    else:
        train_loss = train_numpy(net, x[tr], v[tr], p[tr], cells, args, rng)
    if n_val:
        mse, ce, top1 = losses(net, x[val], v[val], p[val], cells)
        baseline = float(np.mean(v[val] ** 2))
    else:
        mse = ce = top1 = baseline = 0.0
    data = onnx_model(net, planes, cells, args.config, args.generation).SerializeToString()
    atomic_write(args.output, data)
    elapsed = time.time() - started
    report = {
        "job": "train", "version": REPORT_VERSION,
        "config_key": args.config, "samples": int(len(x)),
        "train_rows": int(len(tr)), "val_rows": int(n_val), "epochs": args.epochs,
        "hidden": args.hidden, "params": int(sum(w.size for w in net.params())),
        "generation": args.generation, "train_loss": train_loss,
        "val_value_mse": mse, "val_policy_ce": ce, "val_policy_top1": top1,
        "val_value_mse_baseline": baseline, "elapsed_s": elapsed,
        "samples_per_s": len(tr) * args.epochs / max(elapsed, 1e-9),
        "output": os.path.abspath(args.output),
        # The identity of an ONNX model is the SHA-256 of the whole file.
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    atomic_write(args.result, json.dumps(report, indent=1).encode())
    print(f"trained {args.output} ({backend}): {len(tr)} rows, val value mse {mse:.3f} "
          f"(baseline {baseline:.3f}), policy ce {ce:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
