"""The exact ``shrink`` pass: the channel analysis (``analysis``), the rewrite (``rewrite``) and the pass
(``shrink``, whose docstring holds the math)."""
