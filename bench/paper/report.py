#!/usr/bin/env python3
"""The paper experiment's report: reads what bench/paper/run.sh measured
(OUT/PROFILE/results.env and the sessions' per-key times), writes
OUT/report.md (tables) and OUT/plot.png (gnuplot), prints the tables, and
ends with the RESULT line of the 2005 profile (or of the first one run):

  RESULT speedup_vs_remote=X stick_reduction=Y instantiate_vs_limit=Z
         first_nostick_2005_s=T current_stick_today_vs_limit=C

  X = remote task time / Slingshot task time
  Y = 1 - first-replica instantiation time with a current stick / without
  Z = the worst instantiation time / its physical limit over every case of
      every profile run (limit: the WAN bytes moved while the replica was
      made and caught up / WAN rate + 5 WAN round trips: TCP, TLS 1.3, the
      capability, the manifest, the first chunks)
  T = the first replica without a stick in the 2005 profile, seconds
  C = the first replica with a current stick in the today profile / its limit
  (T and C are 0 when their profile was not run.)

usage: report.py OUT PROFILE...
"""
import os
import shutil
import subprocess
import sys

LIMIT_ROUND_TRIPS = 5
INSTANTIATIONS = [
    ("first_nostick", "first replica, no stick"),
    ("first_current", "first replica, current stick"),
    ("first_stale", "first replica, stale stick"),
    ("another_current", "another replica (second surrogate), current stick"),
]
MODES = [("local", "local only (surrogate, no replication)"),
         ("slingshot", "Slingshot (surrogate leads, home follows)"),
         ("remote", "remote execution (home only)")]


def fail(msg):
    sys.stderr.write("report.py: %s\n" % msg)
    sys.exit(1)


def read_env(path):
    values = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if "=" in line:
                    k, v = line.split("=", 1)
                    values[k] = v
    except OSError as e:
        fail("cannot read %s (%s): run bench/paper/run.sh first" % (path, e))
    return values


def read_session(path):
    keys, task, steps = [], None, {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) != 2:
                    continue
                name, ms = parts[0], float(parts[1])
                if name == "key":
                    keys.append(ms)
                elif name == "task":
                    task = ms
                else:
                    steps[name] = ms
    except OSError as e:
        fail("cannot read %s (%s)" % (path, e))
    if task is None or not keys:
        fail("%s holds no finished session" % path)
    return {"keys": keys, "task": task, "steps": steps}


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]


def link(spec):
    rate, rtt = spec.split(":")[:2]
    return float(rate), float(rtt)


def profile(out, name):
    env = read_env(os.path.join(out, name, "results.env"))
    r = {"name": name, "env": env}
    r["hotspot"] = link(env["hotspot"])
    r["wan"] = link(env["wan"])
    r["sessions"] = {m: read_session(os.path.join(out, name, m + ".keys")) for m, _ in MODES}
    desktop = os.path.join(out, name, "desktop")
    r["desktop"] = None
    if os.path.exists(os.path.join(desktop, "slingshot.keys")):
        r["desktop"] = {m: read_session(os.path.join(desktop, m + ".keys")) for m, _ in MODES}
    wan_rate, wan_rtt = r["wan"]
    r["inst"] = {}
    for key, _ in INSTANTIATIONS:
        ms = float(env[key + "_ms"])
        wan_bytes = int(env[key + "_wan_bytes"])
        limit = wan_bytes * 8 / (wan_rate * 1e6) * 1e3 + LIMIT_ROUND_TRIPS * wan_rtt
        r["inst"][key] = {"ms": ms, "bytes": wan_bytes, "limit": limit}
    s = r["sessions"]
    r["X"] = s["remote"]["task"] / s["slingshot"]["task"]
    r["Y"] = 1 - r["inst"]["first_current"]["ms"] / r["inst"]["first_nostick"]["ms"]
    r["Z"] = max(i["ms"] / i["limit"] for i in r["inst"].values())
    return r


def mib(b):
    return b / (1 << 20)


def session_rows(runs):
    """A table of task times and keystroke latencies: runs are (profile, sessions by mode)."""
    rows = ["| profile | service | task time (s) | keystroke to screen p50 (ms) | p99 (ms) | vs Slingshot |",
            "|---|---|---|---|---|---|"]
    for name, sessions in runs:
        base = sessions["slingshot"]["task"]
        for m, label in MODES:
            s = sessions[m]
            rows.append("| `%s` | %s | %.2f | %.1f | %.1f | %.2fx |" %
                        (name, label, s["task"] / 1e3, pct(s["keys"], 0.5), pct(s["keys"], 0.99), s["task"] / base))
    return rows


def tables(results):
    lines = []
    lines.append("## Network profiles\n")
    lines.append("| profile | hotspot link (client) | WAN link (home) | client to home |")
    lines.append("|---|---|---|---|")
    for r in results:
        (hr, ht), (wr, wt) = r["hotspot"], r["wan"]
        lines.append("| `%s` | %g Mbit/s, %g ms RTT | %g Mbit/s, %g ms RTT | %g ms RTT, %g Mbit/s |" %
                     (r["name"], hr, ht, wr, wt, ht + wt, min(hr, wr)))
    lines.append("")
    lines.append("## Editing session: open, %s characters, save, close (notepad guest, QEMU TCG)\n" %
                 results[0]["env"].get("chars", "?"))
    lines += session_rows([(r["name"], r["sessions"]) for r in results])
    lines.append("")
    desk = [r for r in results if r["desktop"]]
    if desk:
        lines.append("## The same session on the desktop guest (Xvfb, x11vnc, GNU nano in an xterm; 256 MiB, QEMU TCG)\n")
        lines.append("Its pixels are not known in advance: a key's time is until the first screen update after it, "
                     "and the task time is the sum of the keys' times (the typist waits for 30 ms of quiet screen "
                     "between keys, outside that sum). Open is Enter at the closed document's prompt, save is Ctrl-O "
                     "then Enter, close is Ctrl-X. The Slingshot replica was made from a current stick.\n")
        lines += session_rows([(r["name"], r["desktop"]) for r in desk])
        for r in desk:
            if r["env"].get("desktop_slingshot_stalls"):
                lines.append("")
                lines.append("`%s`: the first desktop Slingshot session stalled (a key got no screen update within "
                             "30 s; its keys are in desktop/slingshot-stalled.keys) and was run again: an open "
                             "problem, see README." % r["name"])
            if "desktop_home_differing_pixels" in r["env"]:
                n = int(r["env"]["desktop_home_differing_pixels"])
                lines.append("")
                lines.append("`%s`: after the Slingshot session the document was reopened while the cafe led; then "
                             "the cafe left, and home's replica, once it led with every input, showed %s." %
                             (r["name"], "the same screen, pixel for pixel" if n == 0 else
                              "%d pixels other than the cafe's screen" % n))
            if "desktop_current_ms" in r["env"]:
                lines.append("")
                lines.append("`%s`: the desktop replica, from a current stick, was ready in %.2f s with %.2f MiB over "
                             "the WAN." % (r["name"], float(r["env"]["desktop_current_ms"]) / 1e3,
                                          mib(int(r["env"]["desktop_current_wan_bytes"]))))
                lines.append("")
        lines.append("")
    lines.append("## Instantiating a replica (128 MiB notepad guest)\n")
    lines.append("| profile | case | time (s) | WAN bytes (MiB) | physical limit (s) | time / limit | vs no stick |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in results:
        none = r["inst"]["first_nostick"]["ms"]
        for key, label in INSTANTIATIONS:
            i = r["inst"][key]
            lines.append("| `%s` | %s | %.2f | %.2f | %.2f | %.2f | %.2fx |" %
                         (r["name"], label, i["ms"] / 1e3, mib(i["bytes"]), i["limit"] / 1e3,
                          i["ms"] / i["limit"], i["ms"] / none))
    lines.append("")
    lines.append("Physical limit = WAN bytes (both ways, the home interface's kernel counters: frames as the link "
                 "carries them) / WAN rate + %d WAN round trips (TCP, TLS 1.3, the capability, the manifest, "
                 "the first chunks)." % LIMIT_ROUND_TRIPS)
    lines.append("")
    lines.append("## Headline figures (notepad guest)\n")
    lines.append("| profile | speedup vs remote (X, target >= 2.6) | stick reduction (Y, target >= 0.85) | "
                 "worst instantiation / limit (Z, target <= 1.5) |")
    lines.append("|---|---|---|---|")
    for r in results:
        lines.append("| `%s` | %.2f | %.2f | %.2f |" % (r["name"], r["X"], r["Y"], r["Z"]))
    lines.append("")
    return lines


def plot(out, results):
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        fail("gnuplot is not installed (make bench installs gnuplot-nox)")
    with open(os.path.join(out, "plot-tasks.dat"), "w") as f:
        f.write("profile local slingshot remote\n")
        for r in results:
            s = r["sessions"]
            f.write("%s %.3f %.3f %.3f\n" % (r["name"], s["local"]["task"] / 1e3, s["slingshot"]["task"] / 1e3,
                                              s["remote"]["task"] / 1e3))
    with open(os.path.join(out, "plot-inst.dat"), "w") as f:
        f.write("case measured limit\n")
        for r in results:
            for key, _ in INSTANTIATIONS:
                i = r["inst"][key]
                f.write("%s:%s %.3f %.3f\n" % (r["name"], key.replace("_", "-"), i["ms"] / 1e3, i["limit"] / 1e3))
    script = """
set terminal png size 1200,500 font ",10"
set output '%(out)s/plot.png'
set multiplot layout 1,2 title 'Slingshot vs remote execution, and instantiating a replica (this machine, QEMU TCG)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key top left
set grid ytics
set title 'Editing session: task time by profile'
set ylabel 'seconds'
set yrange [0:*]
plot '%(out)s/plot-tasks.dat' using 2:xtic(1) title 'local only', '' using 3 title 'Slingshot', '' using 4 title 'remote at home'
set title 'Instantiation time and its physical limit'
set logscale y
set yrange [*:*]
set ylabel 'seconds (log scale)'
set xtics rotate by -30 font ",8"
plot '%(out)s/plot-inst.dat' using 2:xtic(1) title 'measured', '' using 3 title 'WAN bytes / rate + 5 RTT'
unset multiplot
""" % {"out": out}
    r = subprocess.run([gnuplot], input=script, text=True, capture_output=True)
    if r.returncode != 0 or not os.path.exists(os.path.join(out, "plot.png")):
        fail("gnuplot failed: %s" % r.stderr.strip())


def main():
    if len(sys.argv) < 3:
        fail("usage: report.py OUT PROFILE...")
    out = os.path.abspath(sys.argv[1])
    results = [profile(out, p) for p in sys.argv[2:]]
    body = ["# Slingshot: the paper's experiment, measured here", "",
            "Written by `make bench` (bench/paper/run.sh, then bench/paper/report.py). Every figure comes from "
            "one run on this machine: client, surrogates and home in network namespaces, joined by emulated links "
            "(TapLink), services in QEMU TCG guests.", ""]
    body += tables(results)
    body += ["![task times and instantiation](plot.png)", ""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(body))
    plot(out, results)
    print("\n".join(tables(results)))
    print("report: %s/report.md, plot: %s/plot.png" % (out, out))
    head = next((r for r in results if r["name"] == "2005"), results[0])
    p2005 = next((r for r in results if r["name"] == "2005"), None)
    today = next((r for r in results if r["name"] == "today"), None)
    t = p2005["inst"]["first_nostick"]["ms"] / 1e3 if p2005 else 0.0
    c = today["inst"]["first_current"]["ms"] / today["inst"]["first_current"]["limit"] if today else 0.0
    print("RESULT speedup_vs_remote=%.2f stick_reduction=%.2f instantiate_vs_limit=%.2f first_nostick_2005_s=%.1f "
          "current_stick_today_vs_limit=%.2f" % (head["X"], head["Y"], max(r["Z"] for r in results), t, c))


if __name__ == "__main__":
    main()
