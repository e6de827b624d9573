"""Pure building blocks for campaigns (calling a list of people): calling windows and
uploaded recipient lists. No I/O and no clocks of their own: callers pass `now` in."""
