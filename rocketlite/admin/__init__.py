"""Operations tooling: ``rocketlite admin`` (mqadmin verbs) and ``rocketlite produce``/``consume``."""
