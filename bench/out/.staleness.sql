SELECT pg_sleep(1);
SELECT extract(epoch FROM clock_timestamp() - last_commit_time) * 1000 FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'bench';
\watch 0.1
