"""The training loop: AdamW, warmup + cosine schedule, clipping, early stopping.

Runs on one process, or data-parallel under torchrun (gloo on CPU): each rank
takes every world-size-th batch and DDP averages the gradients.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np

from edge_runtime.vocab import Vocab
from training import checkpoint
from training.config import TrainConfig
from training.corpus import build_vocab, data_root, oov_rate, split_texts
from training.errors import UserError
from training.scorers import length_sorted_batches

log = logging.getLogger("edgecomplete.train")


def default_sources() -> list[str]:
    root = data_root()
    return [str(root / "sentiment140" / "tweets.txt"), str(root / "tweeteval")]


def encode_texts(texts: list[list[str]], vocab: Vocab) -> list[np.ndarray]:
    """Each text as <bos> w1 .. wn <eos> token ids."""
    return [np.array([vocab.bos_id, *vocab.encode(t), vocab.eos_id], dtype=np.int64) for t in texts]


def epoch_batches(seqs: list[np.ndarray], batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Index batches for one epoch, the same for the same (seed, epoch).

    Texts are shuffled, then sorted by length within pools of 50 batches, so
    a batch holds texts of similar length and little padding.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(seqs))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort([len(seqs[i]) for i in chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def pad_batch(seqs: list[np.ndarray], pad_id: int):
    """Inputs and targets [B, T], padded with pad_id."""
    import torch

    width = max(len(s) for s in seqs) - 1
    inputs = np.full((len(seqs), width), pad_id, dtype=np.int64)
    targets = np.full((len(seqs), width), pad_id, dtype=np.int64)
    for row, s in enumerate(seqs):
        inputs[row, : len(s) - 1] = s[:-1]
        targets[row, : len(s) - 1] = s[1:]
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def batch_loss(model, inputs, targets, pad_id: int):
    """Mean cross-entropy over the non-pad targets, and their count.

    The output layer is the costliest part; running it on real positions
    only skips the padding's share of that cost.
    """
    import torch.nn.functional as F

    hidden, _ = model.hidden(inputs)
    keep = targets != pad_id
    logits = model.logits(hidden[keep])
    return F.cross_entropy(logits.float(), targets[keep]), int(keep.sum())


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Linear warmup to config.lr, then cosine decay to 5% of it."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def evaluate_loss(model, seqs: list[np.ndarray], pad_id: int, batch_size: int = 256) -> float:
    """Mean per-token cross-entropy (nats) over `seqs`."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in length_sorted_batches(seqs, batch_size):
            inputs, targets = pad_batch([seqs[i] for i in batch], pad_id)
            loss, n = batch_loss(model, inputs, targets, pad_id)
            total += float(loss) * n
            count += n
    model.train()
    return total / max(count, 1)


class _Distributed:
    """Rank and world size; initialises gloo when launched by torchrun."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def close(self):
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_data(config: TrainConfig):
    """Splits, vocabulary and encoded sequences, with counts for the log."""
    sources = config.data or default_sources()
    splits = split_texts(sources)
    if not splits.train or not splits.val:
        raise UserError(f"the data gives {splits.counts()} texts: need some in both train and val")
    if config.init_from:
        # Fine-tuning keeps the starting model's vocabulary and shape.
        start = checkpoint.load(config.init_from)
        vocab = checkpoint.vocab_of(start)
        config.model = checkpoint.config_of(start).model
    else:
        vocab = build_vocab(splits.train, config.model.vocab_size, config.min_count)
    config.model.vocab_size = len(vocab)
    stats = {
        "sources": [str(s) for s in sources],
        "texts": splits.counts(),
        "train_tokens": sum(len(t) + 1 for t in splits.train),
        "vocab_size": len(vocab),
        "oov_rate_val": round(oov_rate(splits.val, vocab), 4),
    }
    val_rng = random.Random(config.seed)
    val = splits.val if len(splits.val) <= config.max_val_texts else val_rng.sample(splits.val, config.max_val_texts)
    return vocab, encode_texts(splits.train, vocab), encode_texts(val, vocab), stats


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train a model as `config` says; returns the path of the best model file."""
    import torch

    config.validate()
    out = Path(config.out_dir)
    resume_path = out / checkpoint.RESUME_FILE
    if resume and not resume_path.is_file():
        raise UserError(f"nothing to resume: {resume_path} does not exist")
    if not resume and resume_path.exists():
        raise UserError(f"{out} already holds a training run: pass --resume to continue it, or pick another --out")

    dist = _Distributed()
    if config.threads:
        torch.set_num_threads(config.threads)
    _seed_everything(config.seed)
    vocab, train_seqs, val_seqs, stats = prepare_data(config)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        log.info("data %s", json.dumps(stats))
        log.info("config %s", json.dumps(config.to_dict()))

    from training.models import build_model, count_parameters

    model = build_model(config.model)
    if config.init_from:
        model.load_state_dict(checkpoint.load(config.init_from)["model"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = {"step": 0, "epoch": 0, "batch": 0, "best_val_loss": math.inf, "bad_evals": 0, "tokens": 0}
    if resume:
        ckpt = checkpoint.load(resume_path)
        if ckpt["vocab"] != vocab.tokens:
            raise UserError(f"{resume_path} was trained on other data or vocabulary settings; cannot resume")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["torch_rng"])
        if dist.main:
            log.info("resumed from %s at step %d", resume_path, state["step"])
    if dist.main:
        log.info("model %s with %d parameters", config.model.arch, count_parameters(model))

    loss_model = dist.wrap(_loss_module(model, vocab.pad_id))
    batches_per_epoch = len(epoch_batches(train_seqs, config.batch_size, config.seed, 0)) // dist.world
    total_steps = batches_per_epoch * config.epochs

    def save_resume_point():
        if dist.main:
            checkpoint.atomic_save(_checkpoint(config, vocab, model, optimizer, state), resume_path)

    def save_best():
        if dist.main:
            ckpt = _checkpoint(config, vocab, model, None, state)
            checkpoint.atomic_save(ckpt, out / checkpoint.MODEL_FILE)
            vocab.save(out / "vocab.json")
            (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    started = time.monotonic()
    stop = False
    progress = _progress_bar(total_steps, state["step"], dist.main)
    window = {"loss": 0.0, "tokens": 0, "time": time.monotonic(), "steps": 0}
    model.train()
    while state["epoch"] < config.epochs and not stop:
        batches = epoch_batches(train_seqs, config.batch_size, config.seed, state["epoch"])
        mine = batches[dist.rank :: dist.world][:batches_per_epoch]
        while state["batch"] < len(mine):
            inputs, targets = pad_batch([train_seqs[i] for i in mine[state["batch"]]], vocab.pad_id)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(state["step"], total_steps, config)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                loss, n_tokens = loss_model(inputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            state["step"] += 1
            state["batch"] += 1
            state["tokens"] += n_tokens * dist.world
            window["loss"] += loss.item()
            window["tokens"] += n_tokens * dist.world
            window["steps"] += 1
            progress.update(1)

            if state["step"] % config.log_every == 0 and dist.main:
                elapsed = time.monotonic() - window["time"]
                log.info(
                    "step %7d | epoch %2d | loss %.4f | lr %.2e | %6.1f ms/step | %7.0f tok/s",
                    state["step"], state["epoch"], window["loss"] / window["steps"],
                    optimizer.param_groups[0]["lr"], 1000 * elapsed / window["steps"],
                    window["tokens"] / elapsed,
                )  # fmt: skip
                window = {"loss": 0.0, "tokens": 0, "time": time.monotonic(), "steps": 0}

            if state["step"] % config.eval_every == 0:
                stop = _validate(model, val_seqs, vocab, state, config, save_best, dist.main)
            if state["step"] % config.checkpoint_every == 0:
                save_resume_point()
            out_of_time = config.max_minutes and time.monotonic() - started > 60 * config.max_minutes
            if stop or out_of_time or (config.max_steps and state["step"] >= config.max_steps):
                stop = True
                break
        else:
            state["epoch"] += 1
            state["batch"] = 0

    progress.close()
    finished = state["epoch"] >= config.epochs or stop
    if state["step"] % config.eval_every != 0 and not (config.max_steps and state["step"] >= config.max_steps):
        _validate(model, val_seqs, vocab, state, config, save_best, dist.main)
    if not (out / checkpoint.MODEL_FILE).exists():
        save_best()
    save_resume_point()
    if dist.main:
        log.info("done: step %d, best val loss %.4f, finished %s", state["step"], state["best_val_loss"], finished)
    dist.close()
    return out / checkpoint.MODEL_FILE


def _loss_module(model, pad_id: int):
    """The model with the loss as its forward().

    DDP averages gradients only for work done inside the forward() of the
    module it wraps, so the loss (which calls model.hidden and model.logits,
    not model.forward) has to be a module of its own.
    """
    from torch import nn

    class LossModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, inputs, targets):
            return batch_loss(self.model, inputs, targets, pad_id)

    return LossModule()


def _validate(model, val_seqs, vocab, state, config, save_best, is_main) -> bool:
    """One validation pass; saves the best model; True when patience runs out."""
    val_loss = evaluate_loss(model, val_seqs, vocab.pad_id)
    improved = val_loss < state["best_val_loss"]
    if improved:
        state["best_val_loss"] = val_loss
        state["bad_evals"] = 0
        save_best()
    else:
        state["bad_evals"] += 1
    if is_main:
        log.info(
            "eval step %7d | val loss %.4f | val ppl %8.2f | best %.4f%s",
            state["step"], val_loss, math.exp(val_loss), state["best_val_loss"], " *" if improved else "",
        )  # fmt: skip
    return state["bad_evals"] >= config.patience


def _checkpoint(config, vocab, model, optimizer, state) -> dict:
    import torch

    ckpt = {
        "format": checkpoint.FORMAT,
        "version": checkpoint.VERSION,
        "config": config.to_dict(),
        "vocab": vocab.tokens,
        "model": model.state_dict(),
        "state": dict(state),
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
        ckpt["torch_rng"] = torch.get_rng_state()
    return ckpt


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, leave=False)
