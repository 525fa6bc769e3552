// Parse each file named on stdin (one path a line) with nodemailer's mailparser (simpleParser),
// in REPS rounds (argv[2], default 3); print each file's CPU milliseconds in the first round and
// its least over the rounds (V8 compiles the parser as it runs), as JSON lists in the same order.
// Run by benchmarks/test_parse_speed.py (NODE_PATH set).
const fs = require('fs');
const { simpleParser } = require('mailparser');

(async () => {
  const files = fs.readFileSync(0, 'utf8').split('\n').filter(Boolean);
  const raws = files.map((f) => fs.readFileSync(f));
  for (const raw of raws.slice(0, 20)) {  // warm-up, as on our side
    try { await simpleParser(raw); } catch (e) { /* counted below */ }
  }
  const reps = Number(process.argv[2] || 3);
  const times = raws.map(() => Infinity);
  const first = [];
  for (let rep = 0; rep < reps; rep++) {
    for (const [i, raw] of raws.entries()) {
      const before = process.cpuUsage();
      try { await simpleParser(raw); } catch (e) { /* a failed parse costs its time too */ }
      const used = process.cpuUsage(before);
      times[i] = Math.min(times[i], (used.user + used.system) / 1000);
      if (rep === 0) first.push((used.user + used.system) / 1000);
    }
  }
  process.stdout.write(JSON.stringify({ first, least: times }));
})();
