"""A trained model on disk and back: what inference, export and the
robustness sweep need, without the training loop or its input pipeline.

  state.py       TrainState, the layout of every checkpoint
  checkpoint.py  Orbax managers (latest-K for exact resume, best by a metric)
  card.py        the model card (<workdir>/model.json), the model signature,
                 building a model from it, the parameter digest
  restore.py     restore one workdir's best/latest state; ensemble members
"""
