//! Layers built from ops (Linear, LayerNorm, attention, MLP), in nn/.
