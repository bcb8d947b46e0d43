"""``pimc export <method>``: one click command per training-aware method (declared in ``pimc.passes.METHODS``);
``common`` holds what they share (model resolution, pre-training, shared options, output)."""
