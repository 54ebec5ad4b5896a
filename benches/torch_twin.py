"""PyTorch twin of calmflow's CaLMFlow training step (same shapes as the Rust model):
encoder MLP D->K*H, GPT-NeoX blocks (fused QKV, partial rotary, parallel residual, GELU),
latent heads mu/log-var (H->H->H), decoder MLP K*H->max(K*H,D)->...->D, loss = sum-over-D
MSE + beta*KL, AdamW. Prints ms/step (median of timed steps).
Usage: python torch_twin.py H LAYERS HEADS N P K D BATCH [threads] [steps] [device]
(device: cpu, the default, or cuda; on cuda each timed step ends with a synchronize)

`cargo xtask bench --python PATH` runs it on the demo's shape (64 2 4 16 1 1 2 128 2 40)
and the bench shape (128 4 4 16 2 2 2 64 2 15) after the criterion benches of the same
shapes (`model/train_step/h64_l2_t16_b128`, `.../h128_l4_t64_b64`) and writes the ratio
into docs/benchmarks.md. torch in a venv: `python3 -m venv ~/.cache/calmflow-torch-venv &&
~/.cache/calmflow-torch-venv/bin/pip install torch numpy` (PyPI's wheel, a few GB; it runs
on the CPU). The model is the paper's head (the variational latent and decoder), no
dropout: the Rust benches build the same model."""
import sys, time, math, statistics
import torch, torch.nn as nn, torch.nn.functional as F

H, L, NH, N, P, K, D, B = map(int, sys.argv[1:9])
threads = int(sys.argv[9]) if len(sys.argv) > 9 else 2
steps = int(sys.argv[10]) if len(sys.argv) > 10 else 30
dev = torch.device(sys.argv[11] if len(sys.argv) > 11 else "cpu")
torch.set_num_threads(threads)
torch.manual_seed(0)

def ln(x): return F.layer_norm(x, x.shape[-1:])

class Mlp2(nn.Module):
    def __init__(s, i, o, m=None):
        super().__init__(); m = m or o; s.a = nn.Linear(i, m); s.b = nn.Linear(m, o)
    def forward(s, x): return s.b(F.relu(ln(s.a(x))))

class Block(nn.Module):
    def __init__(s):
        super().__init__()
        s.ln1 = nn.LayerNorm(H); s.ln2 = nn.LayerNorm(H)
        s.qkv = nn.Linear(H, 3 * H); s.o = nn.Linear(H, H)
        s.up = nn.Linear(H, 4 * H); s.down = nn.Linear(4 * H, H)
        hd = H // NH; s.rd = max(2, int(hd * 0.25) // 2 * 2)
    def rope(s, x, cos, sin):
        r, p = x[..., :s.rd], x[..., s.rd:]
        h = s.rd // 2
        rot = torch.cat([-r[..., h:], r[..., :h]], -1)
        return torch.cat([r * cos + rot * sin, p], -1)
    def forward(s, x, cos, sin):
        b, t, _ = x.shape; hd = H // NH
        qkv = s.qkv(s.ln1(x)).view(b, t, NH, 3 * hd).transpose(1, 2)
        q, k, v = qkv.split(hd, -1)
        q, k = s.rope(q, cos, sin), s.rope(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        a = s.o(a.transpose(1, 2).reshape(b, t, H))
        m = s.down(F.gelu(s.up(s.ln2(x))))
        return x + a + m

class Model(nn.Module):
    def __init__(s):
        super().__init__()
        s.enc = Mlp2(D, K * H); s.blocks = nn.ModuleList([Block() for _ in range(L)])
        s.lnf = nn.LayerNorm(H); s.mu = Mlp2(H, H); s.lv = Mlp2(H, H)
        inner = max(K * H, D)
        s.d1 = nn.Linear(K * H, inner); s.d2 = nn.Linear(inner, inner); s.d3 = nn.Linear(inner, D)
    def forward(s, slots):
        b, S, _ = slots.shape
        x = s.enc(slots).view(b, S * K, H)
        t = S * K; rd = s.blocks[0].rd
        inv = 1.0 / (10000 ** (torch.arange(0, rd, 2, device=slots.device).float() / rd))
        f = torch.outer(torch.arange(t, device=slots.device).float(), inv); emb = torch.cat([f, f], -1)
        cos, sin = emb.cos(), emb.sin()
        for blk in s.blocks: x = blk(x, cos, sin)
        h = s.lnf(x)
        mu, lv = s.mu(h), s.lv(h)
        var = lv.exp() + 1e-4
        z = mu + var.sqrt() * torch.randn_like(mu)
        y = z.reshape(b, S, K * H)
        y = s.d3(F.relu(ln(s.d2(F.relu(ln(s.d1(y)))))))
        return y, mu, var

m = Model().to(dev); opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
slots = torch.randn(B, N * P, D).to(dev)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
def step():
    y, mu, var = m(slots)
    S = N * P
    rec = ((y[:, :S - P] - slots[:, P:]) ** 2).sum(-1).mean()
    keep = (S - P) * K
    mu, var = mu[:, :keep], var[:, :keep]
    kl = 0.5 * (mu * mu + var - var.log() - 1).sum(-1).mean()
    loss = rec + 0.01 * kl
    opt.zero_grad(set_to_none=True); loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
for _ in range(5): step()
sync()
ts = []
for _ in range(steps):
    t0 = time.perf_counter(); step(); sync(); ts.append(time.perf_counter() - t0)
print(f"torch {torch.__version__} device={dev.type} threads={threads} H={H} L={L} heads={NH} N={N} P={P} K={K} D={D} B={B} "
      f"params={sum(p.numel() for p in m.parameters())} median_ms={statistics.median(ts)*1e3:.2f}")
