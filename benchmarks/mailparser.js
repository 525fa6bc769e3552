// Parse each file named on stdin (one path a line) with nodemailer's mailparser (simpleParser);
// print the CPU milliseconds of each parse as a JSON list, in the same order. Used by
// benchmarks/test_parse_speed.py, which installs mailparser next to this file's NODE_PATH.
const fs = require('fs');
const { simpleParser } = require('mailparser');

(async () => {
  const files = fs.readFileSync(0, 'utf8').split('\n').filter(Boolean);
  const raws = files.map((f) => fs.readFileSync(f));
  for (const raw of raws.slice(0, 20)) {  // warm-up, as on our side
    try { await simpleParser(raw); } catch (e) { /* counted below */ }
  }
  const times = [];
  for (const raw of raws) {
    const before = process.cpuUsage();
    try { await simpleParser(raw); } catch (e) { /* a failed parse costs its time too */ }
    const used = process.cpuUsage(before);
    times.push((used.user + used.system) / 1000);
  }
  process.stdout.write(JSON.stringify(times));
})();
