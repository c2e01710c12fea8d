"""The small PyTorch network the OpenVINO and Core ML fixtures are converted from (run by hand in a
framework venv; torch is never needed by the tests).

Every kind of convolution a reader must tell apart, in a few kilobytes: a regular 3x3 stem, a
depthwise 3x3, a grouped 3x3 (groups=2), a 1x1 and a 5x5 in parallel (one level), a transposed
convolution (excluded) and a 3x3 head after it. Levels: stem 0, dw 1, grouped 2, point and wide 3,
head 4.
"""

import torch
from torch import nn

LEVELS = {"stem": 0, "dw": 1, "grouped": 2, "point": 3, "wide": 3, "head": 4}
GROUPS = {"stem": 1, "dw": 8, "grouped": 2, "point": 1, "wide": 1, "head": 1}


class TinyConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.point = nn.Conv2d(8, 6, 1)
        self.wide = nn.Conv2d(8, 6, 5, padding=2)
        self.up = nn.ConvTranspose2d(12, 4, 2, stride=2)
        self.head = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.grouped(torch.relu(self.dw(x))))
        x = torch.cat([self.point(x), self.wide(x)], dim=1)
        return self.head(torch.relu(self.up(x)))


def seeded_model() -> TinyConvNet:
    torch.manual_seed(20)
    return TinyConvNet().eval()


def conv_weights(model: TinyConvNet) -> dict:
    """Each regular conv's weight as PyTorch holds it, (out, in/groups, kh, kw), keyed by name."""
    return {name: m.weight.detach().numpy() for name, m in model.named_children() if type(m) is nn.Conv2d}
