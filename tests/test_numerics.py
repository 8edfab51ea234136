"""Numerics with known answers: Adan against its paper's update rule, DDIM generation with
an analytic denoiser."""
import math

import torch

from backend.guidance.base import ddpm_alphas_cumprod
from backend.guidance.sampling import ddim_generate
from backend.pipeline.optim import Adan


def test_adan_follows_the_paper_update_rule():
    """Adan (Xie et al. 2022, Alg. 1) in the paper's β (0.02, 0.08, 0.01), with the official
    code's bias corrections and g_0 = g_1 (no difference at the first step):
        m_k = (1-β1) m + β1 g_k;  v_k = (1-β2) v + β2 (g_k - g_{k-1})
        n_k = (1-β3) n + β3 [g_k + (1-β2)(g_k - g_{k-1})]²
        θ_{k+1} = (θ_k - η (m̂_k + (1-β2) v̂_k) / (√n̂_k + ε)) / (1 + λη)."""
    lr, wd, eps = 0.1, 0.01, 1e-8
    b1, b2, b3 = 0.02, 0.08, 0.01
    p = torch.nn.Parameter(torch.tensor([1.5]))
    opt = Adan([p], lr=lr, weight_decay=wd, eps=eps)
    theta, m, v, n, prev = 1.5, 0.0, 0.0, 0.0, None
    for k, g in enumerate([0.4, -1.0, 2.5, 0.3], start=1):
        p.grad = torch.tensor([g])
        opt.step()
        diff = 0.0 if prev is None else g - prev
        m = (1 - b1) * m + b1 * g
        v = (1 - b2) * v + b2 * diff
        n = (1 - b3) * n + b3 * (g + (1 - b2) * diff) ** 2
        m_hat, v_hat, n_hat = m / (1 - (1 - b1) ** k), v / (1 - (1 - b2) ** k), n / (1 - (1 - b3) ** k)
        theta = (theta - lr * (m_hat + (1 - b2) * v_hat) / (math.sqrt(n_hat) + eps)) / (1 + lr * wd)
        prev = g
        assert abs(float(p.detach()) - theta) < 1e-6, k


class PointMass:
    """ε̂ of data that is one image x*: (x_t - √ᾱ x*) / √(1-ᾱ)."""

    def __init__(self, x_star: torch.Tensor) -> None:
        self.x_star, self.alphas_cumprod = x_star, ddpm_alphas_cumprod()

    def predict_noise(self, x, t, views):
        a = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        return (x - a.sqrt() * self.x_star) / (1 - a).sqrt()

    def decode(self, z):
        return z


def test_ddim_generate_keeps_the_noise_direction_of_a_point_mass():
    # With one image as the data, every DDIM step predicts x0 = x* and keeps ε̂ fixed, so
    # after any number of steps x = √ᾱ_0 x* + √(1-ᾱ_0) ε̂_T, ε̂_T read at the start noise.
    x_star = torch.rand(2, 3, 8, 8)
    den = PointMass(x_star)
    out = ddim_generate(den, (2, 3, 8, 8), torch.device("cpu"), 7, torch.Generator().manual_seed(1))
    start = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(1))
    ac = den.alphas_cumprod
    eps_t = (start - ac[999].sqrt() * x_star) / (1 - ac[999]).sqrt()
    expected = ac[0].sqrt() * x_star + (1 - ac[0]).sqrt() * eps_t
    assert torch.allclose(out, expected.permute(0, 2, 3, 1), atol=1e-5)
