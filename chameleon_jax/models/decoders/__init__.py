"""Segmentation decoders; combined with encoders in models/segmentation.py.

A decoder is built from the encoder's (feature_channels, feature_strides)
plus its own options, and returns (map, aux maps): a (B, H/s, W/s, C) map at
`out_stride` with `out_channels`, and intermediate maps (`aux_channels`,
`aux_strides`, finest first) that become deep-supervision outputs.
"""
