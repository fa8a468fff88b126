"""The PyTorch peer of `tubelet bench train`: one training step (forward, cross-entropy,
backward, AdamW) of the same architectures at the same shapes, on the CPU.

`tubelet bench train --python PY` writes a plan (per model: name, batch, clip [T, H, W], classes,
steps) and runs this script with it; it prints one JSON line per model:
{"model", "fwd_ms", "bwd_ms", "opt_ms", "step_ms", "clips_per_s", "threads", "source"} or
{"model", "error"}. Times are medians over the steps after one warm-up step.

Which code computes each model (the `source` field says it):
- swin-tiny: the official SwinTransformer3D (SwinTransformer/Video-Swin-Transformer @ db018fb,
  mmaction/models/backbones/swin_transformer.py), loaded from a checkout (`--video-swin`) with
  the stand-ins of models/tests/fixtures/gen_parity.py (mmcv/mmaction/timm registries and
  loaders, never on the computed path; DropPath at rate 0), plus mmaction's I3DHead
  (AdaptiveAvgPool3d(1) + Linear, dropout 0.5 as the tiny preset), tubelet's tiny config
  (patch 2x4x4, window 2x4x4, C 32, depths 2,2, heads 1,2).
- vivit-tiny: ViViT is Flax code (scenic); there is no official PyTorch module, so this is a
  plain PyTorch transcription of scenic's ViViT Model 1 as tubelet's tiny preset has it
  (Conv3d tubelet embedding 2x8x8, cls token, learnt position embeddings, 4 pre-LN encoder
  blocks of D 64, 4 heads, MLP 128 with GELU, final LayerNorm, linear head on the cls token),
  built from torch.nn modules (nn.MultiheadAttention, nn.LayerNorm, nn.Linear).
- other presets: not in the peer yet (an "error" line says so).

Install: pip install torch einops numpy (torch CPU wheels: --index-url
https://download.pytorch.org/whl/cpu).
"""

import argparse
import json
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
except ImportError:
    print(json.dumps({"model": "*", "error": "torch is not installed (pip install torch)"}))
    sys.exit(0)


class ViViTModel1(nn.Module):
    def __init__(self, clip, tubelet=(2, 8, 8), d=64, layers=4, heads=4, mlp=128, classes=8):
        super().__init__()
        t, h, w = clip
        n = (t // tubelet[0]) * (h // tubelet[1]) * (w // tubelet[2])
        self.embed = nn.Conv3d(3, d, tubelet, stride=tubelet)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            self.blocks.append(nn.ModuleDict({
                "ln1": nn.LayerNorm(d, eps=1e-6),
                "attn": nn.MultiheadAttention(d, heads, batch_first=True),
                "ln2": nn.LayerNorm(d, eps=1e-6),
                "mlp": nn.Sequential(nn.Linear(d, mlp), nn.GELU(), nn.Linear(mlp, d)),
            }))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, classes)

    def forward(self, x):  # (B, 3, T, H, W)
        x = self.embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for b in self.blocks:
            y = b["ln1"](x)
            x = x + b["attn"](y, y, y, need_weights=False)[0]
            x = x + b["mlp"](b["ln2"](x))
        return self.head(self.norm(x)[:, 0])


def swin_tiny(args, clip, classes):
    if not args.video_swin:
        raise RuntimeError("swin-tiny needs --video-swin <Video-Swin-Transformer checkout>")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "models", "tests", "fixtures"))
    from gen_parity import load, stub_modules

    stub_modules()
    swin = load("mmaction.models.backbones.swin_transformer",
                os.path.join(args.video_swin, "mmaction/models/backbones/swin_transformer.py"))
    backbone = swin.SwinTransformer3D(patch_size=(2, 4, 4), embed_dim=32, depths=[2, 2],
                                      num_heads=[1, 2], window_size=(2, 4, 4), mlp_ratio=4.0,
                                      drop_path_rate=0.0, patch_norm=True)
    width = 32 * 2 ** 1  # the last stage's channels
    head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(0.5),
                         nn.Linear(width, classes))
    return nn.Sequential(backbone, head), "official SwinTransformer3D (Video-Swin-Transformer db018fb) + I3DHead"


def build(args, m):
    clip, classes = m["clip"], m["classes"]
    if m["model"] == "vivit-tiny":
        return ViViTModel1(clip, classes=classes), "PyTorch transcription of scenic ViViT Model 1 (no official PyTorch code)"
    if m["model"] == "swin-tiny":
        return swin_tiny(args, clip, classes)
    raise RuntimeError("not in the peer yet")


def bench(args, m):
    model, source = build(args, m)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    t, h, w = m["clip"]
    x = torch.randn(m["batch"], 3, t, h, w)
    y = torch.arange(m["batch"]) % m["classes"]
    lossf = nn.CrossEntropyLoss()
    rows = []
    for i in range(m["steps"] + 1):
        t0 = time.perf_counter()
        loss = lossf(model(x), y)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i > 0:
            rows.append((t1 - t0, t2 - t1, t3 - t2))
    med = [statistics.median(r[k] for r in rows) * 1e3 for k in range(3)]
    step = sum(med)
    return {"model": m["model"], "fwd_ms": med[0], "bwd_ms": med[1], "opt_ms": med[2],
            "step_ms": step, "clips_per_s": m["batch"] / step * 1e3,
            "threads": torch.get_num_threads(), "source": source}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plan", required=True)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--video-swin", default=os.environ.get("TUBELET_VIDEO_SWIN"))
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for m in json.load(open(args.plan)):
        try:
            print(json.dumps(bench(args, m)), flush=True)
        except Exception as e:  # one model's failure must not hide the others
            print(json.dumps({"model": m["model"], "error": f"{type(e).__name__}: {e}"}), flush=True)


if __name__ == "__main__":
    main()
