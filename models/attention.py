"""Transformer blocks written out op by op, the way timm and HF write them.

``nn.MultiheadAttention`` exports as one fused op and hides the head
structure; pruning has to see the q/k/v projections, the head reshape and
the score matmul as separate nodes, so these blocks spell them out.
"""

from torch import nn


class AttentionBlock(nn.Module):
    """Multi-head self-attention with separate q/k/v Linears and an output projection.

    No residual and no LayerNorm, so every channel of the projections is
    prunable; the head count is a plain attribute so the reshape to
    (B, N, H, D) carries it as a constant, as real models do.
    """

    def __init__(self, embed_dim=64, num_heads=4):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(embed_dim, embed_dim)
        self.k = nn.Linear(embed_dim, embed_dim)
        self.v = nn.Linear(embed_dim, embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x):
        B, N, _ = x.shape
        # (B, N, C) -> (B, N, H, D) -> (B, H, N, D)
        q = self.q(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        # Merge heads as H * D rather than reusing the input width, so pruning
        # head_dim is not pinned to the embedding size.
        out = (attn @ v).transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        return self.proj(out)


class AttentionMLPBlock(nn.Module):
    """A pre-norm ViT encoder block: LN -> attention -> add -> LN -> MLP -> add.

    The residuals tie the embedding width across the block while the MLP
    hidden width and the attention head dim stay free: the usual mix of
    pinned and prunable channels in a transformer.
    """

    def __init__(self, embed_dim=64, num_heads=4, mlp_ratio=4):
        super().__init__()
        hidden = embed_dim * mlp_ratio
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = AttentionBlock(embed_dim, num_heads)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
