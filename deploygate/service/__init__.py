"""The ordered steps (gate, ship, rollback, adopt): core + ports only; the adapters are handed in."""
