"""A YOLOv8-style detector in plain torch, small enough for tests.

Detectors are where real exports get their hardest channel couplings: C2f
blocks split a conv's output in two halves and concatenate every bottleneck
output back on, SPPF concatenates three chained max pools of the same
tensor, the neck concatenates upsampled and strided features across scales,
and the head splits each scale into a box and a class branch whose outputs
are flattened, concatenated over scales and split again. Decoding (DFL
softmax, anchors built from the feature-map shapes in ``forward``) puts
``Shape``/``Range``/``Expand`` arithmetic into a dynamic-shape export, as the
ultralytics export does. Structure follows ultralytics' ``yolov8.yaml``;
weights are random and the code is our own.
"""

from __future__ import annotations

import torch
from torch import nn

from .zoo import SEED, randomize_batchnorm


class ConvBnSiLU(nn.Module):
    """``Conv2d(bias=False) -> BatchNorm2d -> SiLU``, the ultralytics ``Conv``."""

    def __init__(self, cin, cout, kernel=1, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 convs, with a residual add when ``shortcut`` (backbone) and none in the neck."""

    def __init__(self, channels, shortcut=True):
        super().__init__()
        self.cv1 = ConvBnSiLU(channels, channels, 3)
        self.cv2 = ConvBnSiLU(channels, channels, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """1x1 conv, chunk into two halves, chain ``n`` bottlenecks on the second, concat all, 1x1 conv.

    The concat holds both chunk halves plus every bottleneck output, so the
    first conv's channels are coupled to the concat at two offsets and the
    residual adds tie each bottleneck to the half it started from.
    """

    def __init__(self, cin, cout, n=1, shortcut=False):
        super().__init__()
        self.hidden = cout // 2
        self.cv1 = ConvBnSiLU(cin, 2 * self.hidden, 1)
        self.cv2 = ConvBnSiLU((2 + n) * self.hidden, cout, 1)
        self.m = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max pools, concatenated with their input."""

    def __init__(self, cin, cout, kernel=5):
        super().__init__()
        hidden = cin // 2
        self.cv1 = ConvBnSiLU(cin, hidden, 1)
        self.cv2 = ConvBnSiLU(hidden * 4, cout, 1)
        self.m = nn.MaxPool2d(kernel, 1, kernel // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss decoding: expected value of a softmax over ``reg_max`` bins.

    A fixed 1x1 conv with weights ``0..reg_max-1`` computes the expectation,
    as ultralytics does; the conv is not a parameter a pruner may touch (its
    input axis is the bin axis, reached through a reshape of the box branch).
    """

    def __init__(self, reg_max=16):
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1))

    def forward(self, x):
        b, _, a = x.shape  # (B, 4 * reg_max, A)
        x = x.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)  # (B, reg_max, 4, A)
        return self.conv(x).view(b, 4, a)


def make_anchors(feats, strides, offset=0.5):
    """Anchor centres and strides from the feature maps' run-time shapes.

    Built in ``forward`` from ``feat.shape`` so a dynamic export computes
    them with ``Shape -> Range -> meshgrid`` instead of baking a constant.
    """
    points, stride_list = [], []
    for feat, stride in zip(feats, strides):
        _, _, h, w = feat.shape
        sx = torch.arange(w, dtype=feat.dtype, device=feat.device) + offset
        sy = torch.arange(h, dtype=feat.dtype, device=feat.device) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), stride, dtype=feat.dtype, device=feat.device))
    return torch.cat(points).transpose(0, 1), torch.cat(stride_list).transpose(0, 1)


def dist2bbox(distance, anchors):
    """(left, top, right, bottom) distances from anchors -> (cx, cy, w, h), on axis 1."""
    lt, rb = distance.chunk(2, 1)
    x1y1, x2y2 = anchors - lt, anchors + rb
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1)


class Detect(nn.Module):
    """Decoupled head: per scale a box branch (4*reg_max) and a class branch (nc), then decoding."""

    def __init__(self, channels, nc=8, reg_max=16, strides=(8, 16, 32)):
        super().__init__()
        self.nc, self.reg_max, self.strides = nc, reg_max, strides
        self.no = nc + 4 * reg_max
        box_width = max(16, channels[0] // 4, 4 * reg_max)
        cls_width = max(channels[0], nc)
        self.box = nn.ModuleList(
            nn.Sequential(ConvBnSiLU(c, box_width, 3), ConvBnSiLU(box_width, box_width, 3),
                          nn.Conv2d(box_width, 4 * reg_max, 1))
            for c in channels)
        self.cls = nn.ModuleList(
            nn.Sequential(ConvBnSiLU(c, cls_width, 3), ConvBnSiLU(cls_width, cls_width, 3),
                          nn.Conv2d(cls_width, nc, 1))
            for c in channels)
        self.dfl = DFL(reg_max)

    def forward(self, feats):
        maps = [torch.cat((box(x), cls(x)), 1) for x, box, cls in zip(feats, self.box, self.cls)]
        b = maps[0].shape[0]
        flat = torch.cat([m.view(b, self.no, -1) for m in maps], 2)  # (B, no, A)
        anchors, strides = make_anchors(maps, self.strides)
        box, cls = flat.split((4 * self.reg_max, self.nc), 1)
        boxes = dist2bbox(self.dfl(box), anchors.unsqueeze(0)) * strides
        return torch.cat((boxes, cls.sigmoid()), 1)  # (B, 4 + nc, A)


class YoloV8Tiny(nn.Module):
    """Backbone (strided convs + C2f, SPPF), FPN/PAN neck, three-scale decoupled head.

    Input ``(B, 3, H, W)`` with H and W multiples of 32; output
    ``(B, 4 + nc, A)`` with ``A = (H*W/64) * (1 + 1/4 + 1/16)`` anchors.
    """

    def __init__(self, widths=(16, 32, 32, 48, 64), nc=8, reg_max=16):
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.stem = ConvBnSiLU(3, w1, 3, 2)                                            # /2
        self.stage2 = nn.Sequential(ConvBnSiLU(w1, w2, 3, 2), C2f(w2, w2, 1, True))    # /4
        self.stage3 = nn.Sequential(ConvBnSiLU(w2, w3, 3, 2), C2f(w3, w3, 2, True))    # /8  -> P3
        self.stage4 = nn.Sequential(ConvBnSiLU(w3, w4, 3, 2), C2f(w4, w4, 2, True))    # /16 -> P4
        self.stage5 = nn.Sequential(ConvBnSiLU(w4, w5, 3, 2), C2f(w5, w5, 1, True), SPPF(w5, w5))  # /32
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top4 = C2f(w5 + w4, w4)        # up(P5) ++ P4
        self.top3 = C2f(w4 + w3, w3)        # up(N4) ++ P3  -> out /8
        self.down3 = ConvBnSiLU(w3, w3, 3, 2)
        self.bottom4 = C2f(w3 + w4, w4)     # down(out3) ++ N4 -> out /16
        self.down4 = ConvBnSiLU(w4, w4, 3, 2)
        self.bottom5 = C2f(w4 + w5, w5)     # down(out4) ++ P5 -> out /32
        self.detect = Detect((w3, w4, w5), nc, reg_max)

    def forward(self, x):
        p3 = self.stage3(self.stage2(self.stem(x)))
        p4 = self.stage4(p3)
        p5 = self.stage5(p4)
        n4 = self.top4(torch.cat((self.up(p5), p4), 1))
        out3 = self.top3(torch.cat((self.up(n4), p3), 1))
        out4 = self.bottom4(torch.cat((self.down3(out3), n4), 1))
        out5 = self.bottom5(torch.cat((self.down4(out4), p5), 1))
        return self.detect([out3, out4, out5])


def build_detector(seed=SEED):
    """A seeded ``YoloV8Tiny`` in eval mode with randomised BatchNorms; global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = YoloV8Tiny()
        randomize_batchnorm(model)
    return model.eval()
