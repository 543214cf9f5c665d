"""What a user runs on top of training: compare, tune, sweep, bench, the Lake evaluation."""
