"""Export to TensorFlow Serving: the only package that imports TensorFlow.

  savedmodel.py  trained JAX model -> jax2tf SavedModel whose signatures
                 take images as customers send them (pre- and post-processing
                 in the graph), parameters as variables; verification against
                 the JAX model
  publish.py     TF Serving layout: increasing integer versions written
                 atomically, warmup records, export metadata, version labels,
                 model config / batching / monitoring files and the
                 production command line
  run.py         `python main.py --mode=export`: checkpoint -> verified,
                 published version
"""
