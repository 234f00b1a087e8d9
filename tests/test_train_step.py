"""The step's hand-written gradients equal autodiff of the plain formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itjax.model.llama import lora_matmul
from itjax.training.step import chunked_cross_entropy


def plain_cross_entropy(hidden, head, targets, weights, cap=None):
  logits = jnp.einsum("btd,dv->btv", hidden, head)
  logits = logits if cap is None else cap * jnp.tanh(logits / cap)
  nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  return jnp.sum(nll * weights), jnp.sum((jnp.argmax(logits, -1) == targets) * weights)


@pytest.mark.parametrize("chunk,density,cap", [(4, 0.7, None), (16, 0.7, None), (0, 0.7, None), (2, 0.2, None),
                                               (4, 0.2, None), (4, 0.7, 1.5)])
def test_linear_cross_entropy_matches_autodiff(chunk, density, cap):
  """Dense masks, and sparse ones (a fifth of the positions, one row with none, weights other than 1) where the
  chunks past the longest row's targets are skipped, and soft-capped logits (Gemma 2): the same loss, hits and
  gradients as the plain formula."""
  k = jax.random.split(jax.random.PRNGKey(0), 5)
  hidden = jax.random.normal(k[0], (3, 16, 8))
  head = jax.random.normal(k[1], (8, 50))
  targets = jax.random.randint(k[2], (3, 16), 0, 50)
  weights = (jax.random.uniform(k[3], (3, 16)) < density).astype(jnp.float32)
  if density < 0.5:
    weights = weights.at[1].set(0.0) * jax.random.choice(k[4], jnp.array([1.0, 2.0]), (3, 16))
    assert 0 < weights.sum() and (weights != 0).sum(1).max() <= 16 - max(chunk, 1)  # at least one chunk skipped
  (loss, hits), (loss0, hits0) = (chunked_cross_entropy(hidden, head, targets, weights, chunk, cap),
                                  plain_cross_entropy(hidden, head, targets, weights, cap))
  np.testing.assert_allclose(loss, loss0, rtol=1e-6)
  assert hits == hits0
  scale = lambda f: (lambda h, w: 0.37 * f(h, w)[0])  # a cotangent other than 1
  ours = jax.grad(scale(lambda h, w: chunked_cross_entropy(h, w, targets, weights, chunk, cap)), argnums=(0, 1))
  ref = jax.grad(scale(lambda h, w: plain_cross_entropy(h, w, targets, weights, cap)), argnums=(0, 1))
  for a, b in zip(ours(hidden, head), ref(hidden, head)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  only_hidden = jax.grad(scale(lambda h, w: chunked_cross_entropy(h, w, targets, weights, chunk, cap)))(hidden, head)
  np.testing.assert_allclose(only_hidden, ref(hidden, head)[0], atol=1e-5, rtol=1e-5)


def test_lora_matmul_matches_autodiff():
  k = jax.random.split(jax.random.PRNGKey(1), 5)
  x, x_drop = jax.random.normal(k[0], (2, 5, 6)), jax.random.normal(k[1], (2, 5, 6))
  w, a, b = jax.random.normal(k[2], (6, 7)), jax.random.normal(k[3], (6, 3)), jax.random.normal(k[4], (3, 7))
  plain = lambda x, xd, w, a, b: jnp.sum(jnp.sin(x @ w + (xd @ a) @ b))
  ours = lambda x, xd, w, a, b: jnp.sum(jnp.sin(lora_matmul(x, xd, w, a, b)))
  np.testing.assert_allclose(ours(x, x_drop, w, a, b), plain(x, x_drop, w, a, b), rtol=1e-6)
  for g, g0 in zip(jax.grad(ours, argnums=range(5))(x, x_drop, w, a, b),
                   jax.grad(plain, argnums=range(5))(x, x_drop, w, a, b)):
    np.testing.assert_allclose(g, g0, atol=1e-5, rtol=1e-5)


def test_anchored_cross_entropy_with_capped_logits_matches_autodiff():
  """The KL anchor on soft-capped logits (Gemma 2): CE + scale * KL(base || tuned), both models' logits capped, and
  its gradients in the tuned hidden states and head, as autodiff of the plain formula gives them."""
  from itjax.training.step import anchored_cross_entropy
  k = jax.random.split(jax.random.PRNGKey(3), 6)
  hidden, base_hidden = jax.random.normal(k[0], (2, 8, 6)), jax.random.normal(k[1], (2, 8, 6))
  head, base_head = jax.random.normal(k[2], (6, 30)), jax.random.normal(k[3], (6, 30))
  targets = jax.random.randint(k[4], (2, 8), 0, 30)
  weights = (jax.random.uniform(k[5], (2, 8)) < 0.6).astype(jnp.float32)
  kl_weights, cap, scale = 1.0 - weights, 2.0, 0.7

  def plain(h, v):
    lt = jax.nn.log_softmax(cap * jnp.tanh(jnp.einsum("btd,dv->btv", h, v) / cap))
    lb = jax.nn.log_softmax(cap * jnp.tanh(jnp.einsum("btd,dv->btv", base_hidden, base_head) / cap))
    ce = -jnp.sum(jnp.take_along_axis(lt, targets[..., None], -1)[..., 0] * weights)
    return ce + scale * jnp.sum(jnp.sum(jnp.exp(lb) * (lb - lt), -1) * kl_weights)

  def ours(h, v):
    return anchored_cross_entropy(h, v, base_hidden, base_head, targets, weights, kl_weights, scale, 4, cap)[0]

  np.testing.assert_allclose(ours(hidden, head), plain(hidden, head), rtol=1e-5)
  for a, b in zip(jax.grad(ours, argnums=(0, 1))(hidden, head), jax.grad(plain, argnums=(0, 1))(hidden, head)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
