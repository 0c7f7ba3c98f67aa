"""Tiny hand-written nets, one per channel-coupling pattern, for fast tests.

Each isolates one structure the pruner must get right (residual add,
concat offsets, depthwise, grouped conv, flatten into a Linear) so a failing
test points at one rule instead of a whole torchvision model. All take
(1, 3, 32, 32) and end in a 10-way classifier.
"""

import torch
from torch import nn


def conv_bn_relu(cin, cout, kernel=3, groups=1):
    """The standard conv block; BN makes each conv a BN-folding candidate too."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


def classifier(channels, classes=10):
    """Global pool + Linear, so the last conv's channels feed a Linear's inputs."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))


class TinyCNN(nn.Module):
    """Two conv blocks joined by a residual add: both must keep the same channels."""

    def __init__(self):
        super().__init__()
        self.block1 = conv_bn_relu(3, 16)
        self.block2 = conv_bn_relu(16, 16)
        self.head = classifier(16)

    def forward(self, x):
        h = self.block1(x)
        return self.head(h + self.block2(h))


class TinyConcat(nn.Module):
    """A stem shared by two branches of different widths, concatenated.

    Unequal widths (8 and 12) make the concat offsets matter: a pruner that
    maps kept channels of the second branch without shifting them fails here.
    """

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.branch_a = conv_bn_relu(16, 8, kernel=1)
        self.branch_b = conv_bn_relu(16, 12)
        self.fuse = conv_bn_relu(20, 16, kernel=1)
        self.head = classifier(16)

    def forward(self, x):
        h = self.stem(x)
        return self.head(self.fuse(torch.cat([self.branch_a(h), self.branch_b(h)], dim=1)))


def tiny_depthwise():
    """Pointwise -> depthwise -> pointwise: depthwise channels follow their input 1:1."""
    return nn.Sequential(
        conv_bn_relu(3, 16, kernel=1),
        conv_bn_relu(16, 16, groups=16),
        conv_bn_relu(16, 24, kernel=1),
        classifier(24),
    )


def tiny_grouped():
    """A groups=4 conv between 1x1 convs: pruning must keep the groups equal-sized."""
    return nn.Sequential(
        conv_bn_relu(3, 16, kernel=1),
        conv_bn_relu(16, 16, groups=4),
        conv_bn_relu(16, 24, kernel=1),
        classifier(24),
    )


def tiny_flatten():
    """Flatten without pooling: each conv channel owns a block of H*W Linear inputs."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 16 * 16, 10),
    )


SMALL_MODELS = {
    "tiny_cnn": TinyCNN,
    "tiny_concat": TinyConcat,
    "tiny_depthwise": tiny_depthwise,
    "tiny_grouped": tiny_grouped,
    "tiny_flatten": tiny_flatten,
}
"""Builder per tiny net; each builds with the global RNG, so seed before calling."""
