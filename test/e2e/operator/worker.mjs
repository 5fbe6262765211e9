// A small training stand-in run by `tensile run` inside each ElasticJob pod: every 200 ms it appends
// "<replica-index> <WORLD_SIZE> <RANK> <ms>" to $OBS_FILE, until SIGTERM or $STOP_FILE appears (then exits 0).
import { appendFileSync, existsSync } from 'node:fs';

const obs = process.env.OBS_FILE;
const stop = process.env.STOP_FILE;
const idx = process.env.TENSILE_REPLICA_INDEX ?? '?';
const tick = () => {
  if (stop && existsSync(stop)) process.exit(0);
  if (obs) appendFileSync(obs, `${idx} ${process.env.WORLD_SIZE} ${process.env.RANK} ${Date.now()}\n`);
};
tick();
const t = setInterval(tick, 200);
process.on('SIGTERM', () => {
  clearInterval(t);
  process.exit(0);
});
