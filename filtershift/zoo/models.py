"""Small CNN architectures of the demo zoo, built by name (``arch`` column ``zoo:NAME?key=value``).

:func:`build` returns the randomly initialised ``nn.Module`` whose ``load_state_dict`` accepts the
saved state dict. Modules are registered in execution order, so registration order is depth order.
Only ``nn.Conv2d`` layers are "regular" convolutions; the U-Net and the DCGAN generator up-sample
with ``nn.ConvTranspose2d``, the super-resolution net with ``nn.PixelShuffle``.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class VGG(nn.Module):
    """Three stages of ``blocks`` 3x3 conv-BN-ReLU layers (width, 2*width, 4*width), max-pooling."""

    def __init__(self, in_channels: int = 3, n_classes: int = 4, width: int = 16, blocks: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for stage in range(3):
            for _ in range(blocks):
                layers += _conv_bn(c, width * 2**stage)
                c = width * 2**stage
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, n_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-style: 3x3 stem, three stages of ``blocks`` basic blocks, 1x1 projection shortcuts."""

    def __init__(self, in_channels: int = 3, n_classes: int = 4, width: int = 16, blocks: int = 1):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, width))
        stages: list[nn.Module] = []
        c = width
        for stage in range(3):
            for b in range(blocks):
                stride = 2 if (stage > 0 and b == 0) else 1
                stages.append(BasicBlock(c, width * 2**stage, stride))
                c = width * 2**stage
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x):
        return self.fc(self.stages(self.stem(x)).mean(dim=(2, 3)))


class MobileNet(nn.Module):
    """MobileNet-v1 style: 3x3 stem, then depthwise 3x3 (groups = channels) + pointwise 1x1 blocks."""

    def __init__(self, in_channels: int = 3, n_classes: int = 4, width: int = 16, blocks: int = 2):
        super().__init__()
        layers = _conv_bn(in_channels, width, stride=1)
        c = width
        for stage in range(3):
            for b in range(blocks):
                c_out = width * 2**stage
                layers += _conv_bn(c, c, stride=2 if (stage > 0 and b == 0) else 1, groups=c)
                layers += _conv_bn(c, c_out, kernel=1)
                c = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, n_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(*_conv_bn(c_in, c_out), *_conv_bn(c_out, c_out))


class UNet(nn.Module):
    """Three-level U-Net; up-sampling by 2x2 ``ConvTranspose2d``, skip connections by concatenation."""

    def __init__(self, in_channels: int = 1, n_classes: int = 1, width: int = 8):
        super().__init__()
        w = width
        self.enc1 = _double_conv(in_channels, w)
        self.enc2 = _double_conv(w, 2 * w)
        self.bottom = _double_conv(2 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _double_conv(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _double_conv(2 * w, w)
        self.head = nn.Conv2d(w, n_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        b = self.bottom(nn.functional.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)


class Generator(nn.Module):
    """DCGAN generator: z -> 4x4 by ``ConvTranspose2d``, then (``ConvTranspose2d`` x2 up + 3x3 conv)
    per octave up to ``size``, and a 3x3 conv to the image channels with tanh."""

    def __init__(self, out_channels: int = 3, width: int = 16, nz: int = 32, size: int = 32):
        super().__init__()
        n_up = {16: 2, 32: 3}[size]
        c = width * 2**n_up
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, c, 4, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
        for _ in range(n_up):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            layers += _conv_bn(c // 2, c // 2)
            c //= 2
        layers += [nn.Conv2d(c, out_channels, 3, padding=1), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.nz = nz

    def forward(self, z):
        return self.main(z.reshape(z.shape[0], self.nz, 1, 1))


class Discriminator(nn.Module):
    """DCGAN-style discriminator of 3x3 convolutions (stride 1, then stride 2), LeakyReLU, no BN on
    the first layer; a linear logit."""

    def __init__(self, in_channels: int = 3, width: int = 16, size: int = 32):
        super().__init__()
        n_down = {16: 2, 32: 3}[size]
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(n_down):
            c_out = width * 2**i
            layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=i == 0), nn.LeakyReLU(0.2, True)]
            layers += [nn.Conv2d(c_out, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
            c = c_out
        self.main = nn.Sequential(*layers)
        self.fc = nn.Linear(c * (size // 2**n_down) ** 2, 1)

    def forward(self, x):
        return self.fc(self.main(x).flatten(1))


class SuperResolution(nn.Module):
    """ESPCN/EDSR-style x2 super-resolution: 3x3 head, residual 3x3 body, 3x3 to C*4, PixelShuffle."""

    def __init__(self, in_channels: int = 1, width: int = 16, blocks: int = 2, scale: int = 2):
        super().__init__()
        self.head = nn.Conv2d(in_channels, width, 3, padding=1)
        self.body = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(True), nn.Conv2d(width, width, 3, padding=1))
            for _ in range(blocks)
        )
        self.tail = nn.Conv2d(width, in_channels * scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        self.scale = scale

    def forward(self, x):
        h = self.head(x)
        for block in self.body:
            h = h + block(h)
        up = nn.functional.interpolate(x, scale_factor=float(self.scale), mode="nearest")
        return up + self.shuffle(self.tail(h))


class Detector(nn.Module):
    """Centre-point detection (CenterNet-like): a stride-4 3x3 backbone and a head predicting an
    objectness logit and the object coverage per cell."""

    def __init__(self, in_channels: int = 3, width: int = 16):
        super().__init__()
        self.backbone = nn.Sequential(
            *_conv_bn(in_channels, width),
            *_conv_bn(width, 2 * width, stride=2),
            *_conv_bn(2 * width, 2 * width),
            *_conv_bn(2 * width, 4 * width, stride=2),
            *_conv_bn(4 * width, 4 * width),
        )
        self.head = nn.Sequential(nn.Conv2d(4 * width, 2 * width, 3, padding=1), nn.ReLU(True), nn.Conv2d(2 * width, 2, 1))

    def forward(self, x):
        return self.head(self.backbone(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "vgg": VGG,
    "resnet": ResNet,
    "mobilenet": MobileNet,
    "unet": UNet,
    "dcgan_g": Generator,
    "dcgan_d": Discriminator,
    "srnet": SuperResolution,
    "detnet": Detector,
}


def build(name: str, **kwargs) -> nn.Module:
    """The randomly initialised module ``name`` (a key of :data:`ARCHITECTURES`) with ``kwargs``.

    Raises ``KeyError`` for an unknown name and ``TypeError`` for unknown keyword arguments.
    """
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown zoo architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](**kwargs)


def conv_kernel_counts(module: nn.Module) -> tuple[int, int, int]:
    """``(n_conv, n_3x3_layers, n_3x3_kernels)`` over the module's ``nn.Conv2d`` layers (transposed
    convolutions excluded)."""
    convs = [m for m in module.modules() if type(m) is nn.Conv2d]
    three = [m for m in convs if tuple(m.kernel_size) == (3, 3)]
    return len(convs), len(three), sum(m.weight.shape[0] * m.weight.shape[1] for m in three)
