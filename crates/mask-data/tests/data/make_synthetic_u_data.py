#!/usr/bin/env python3
"""Writes synthetic_u.data: a small interaction file in MovieLens u.data format
(user \t item \t rating \t timestamp) with sequential structure a model can learn.

Rule (deterministic, no randomness):
- users 1..=60, items 1..=40 (ids written as 100 + item, so the reader's dense remapping is used);
- user u starts at item s = (7 u mod 40) + 1 and walks with stride d = 1 + (u mod 3) around
  the circle of 40 items: item_t = ((s - 1 + t d) mod 40) + 1, for t = 0 .. L - 1 with
  L = 8 + (5 u mod 13) (8..20 items, no repeats);
- timestamp = 880000000 + 1000 u + 10 t, except that user 5's items 2 and 3 share a timestamp
  (a tie, kept in file order by the reader);
- rating = 1 + (u + t) mod 5;
- users 61 and 62 have 2 interactions each (dropped by the leave-one-out split);
- lines are written interleaved across users (ordered by t, then u), not grouped by user.
The next item is thus predictable from the last two: HR@10 should far exceed the popularity
baseline after a little training.
"""
rows = []
for u in range(1, 61):
    s = (7 * u) % 40 + 1
    d = 1 + u % 3
    n = 8 + (5 * u) % 13
    for t in range(n):
        item = (s - 1 + t * d) % 40 + 1
        ts = 880000000 + 1000 * u + 10 * t
        if u == 5 and t == 3:
            ts -= 10
        rows.append((t, u, 100 + item, 1 + (u + t) % 5, ts))
for u in (61, 62):
    for t in range(2):
        rows.append((t, u, 100 + 1 + t, 3, 880000000 + 1000 * u + 10 * t))
rows.sort()
with open(__file__.replace("make_synthetic_u_data.py", "synthetic_u.data"), "w") as f:
    for _, u, item, rating, ts in rows:
        f.write(f"{u}\t{item}\t{rating}\t{ts}\n")
