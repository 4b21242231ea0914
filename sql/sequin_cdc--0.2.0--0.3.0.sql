/* sequin_cdc--0.2.0--0.3.0.sql: one job a function (issue 10) */

\echo Use "ALTER EXTENSION sequin_cdc UPDATE TO '0.3.0'" to load this file. \quit
