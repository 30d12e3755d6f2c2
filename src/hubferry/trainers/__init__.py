"""Training backends behind one small protocol (:mod:`hubferry.trainers.base`)."""
