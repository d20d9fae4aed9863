"""The generative models p_theta and the learnable scorers f_phi: the PR side of the correspondence.

Plain PyTorch modules with their own objective L(theta) (maximum likelihood, a GAN loss), used by
the environments (as the reference model of an MDP), by the agents and by Algorithm 1
(:class:`kcrl.trainer.PRTrainer`). Nothing here imports an environment, an agent or an RL library.

* :mod:`kcrl.models.tabular` — a tabular autoregressive model of a V^T world (``TabularSequence-v0``).
* :mod:`kcrl.models.lstm_generator` — SeqGAN's LSTM language model and its MLE (``OracleSequence-v0``).
* :mod:`kcrl.models.text_generator` — the template-conditioned seq2seq generator (``TemplateSentence-v0``).
* :mod:`kcrl.models.image_generator` — the conditional image generator (``StructuredDigits-v0``).
* :mod:`kcrl.models.implicit_generator` — an implicit generator x = G(z) (``GaussianRing-v0``).
* :mod:`kcrl.models.implicit_image_generator` — an implicit conditional image generator with a GAN loss.
* :mod:`kcrl.models.sequence_scorer` — SeqGAN's CNN as a learnable sequence constraint.
"""
