"""The task families. Each is data (a config, a batch function of `(seed, step)`), a loss and the
measurements of its paper; the model, the train loop and the run folders are shared (`sinks_jax`).

- `bigram_backcopy/`: Bigram-Backcopy (Guo et al. 2024, arXiv 2410.13835, §3): `config`
  (`BBDataConfig`, `BBConfig`), `data` (the shipped Shakespeare table, sampling), `analysis` (every
  §3 metric per layer and head in one forward pass), `runs` (`train_bb`, shared by the experiments
  that train several BB models).
- `averaging`: the averaging tasks of Zhang, Khan & Papyan 2025 (arXiv 2502.00919): the SEP-span
  mean (catch, tag, release) and the trigger-at-query variant; vector inputs, MSE loss, a
  `VectorTransformer`.
- `corpus/` and `lm`: small GPTs on text or synthetic documents (Barbero et al. 2025, arXiv
  2504.02732; Gu et al. 2025): sources, tokenizers, the cached token store, packing strategies;
  `lm.LMConfig`, `lm.train_lm` and the sink measurements; `lm_presets` shared by the sweeps.

A new task needs three things, nothing copied: a frozen data config with `batch_size`, a
`RunConfig` subclass holding it as `data`, and a batch function `step -> batch` (a loss
`(model, batch) -> scalar` too when next-token cross-entropy is not it); `sinks_jax.train.train`
does the rest (see the README's forking guide).
"""
