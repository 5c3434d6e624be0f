-- Statements for the classifier oracle (tests/classifier_oracle.rs), one per
-- line; lines starting with `--` are comments. Each runs on a real server in
-- every session reading the test knows (default, standard_conforming_strings
-- off, client_encoding SJIS), inside a read-only transaction that is rolled
-- back. Whenever the server tried to change something, jitgate's verdict for
-- that reading must not be read or session.
SELECT 1
SELECT * FROM items WHERE id = 1
SELECT count(*) FROM items
TABLE items
VALUES (1), (2)
WITH x AS (SELECT * FROM items) SELECT * FROM x
DELETE FROM items
UPDATE items SET name = 'x'
INSERT INTO items (name) VALUES ('x')
WITH d AS (DELETE FROM items RETURNING *) SELECT count(*) FROM d
SELECT * FROM items FOR UPDATE
SELECT * INTO stolen FROM items
CREATE TABLE stolen (x int)
CREATE TEMP TABLE tmp (x int)
SELECT nextval('items_id_seq')
SELECT setval('items_id_seq', 1)
SELECT pg_advisory_lock(4242)
SELECT pg_try_advisory_lock(4242)
SELECT pg_advisory_xact_lock(4242)
SELECT txid_current()
SELECT pg_current_xact_id()
SELECT lo_creat(-1)
SELECT set_config('default_transaction_read_only', 'off', false)
SELECT query_to_xml('DELETE FROM items RETURNING *', true, false, '')
SELECT query_to_xml('SELECT * FROM items', true, false, '')
SELECT 'x\' , $$' ; DELETE FROM items; -- $$
SELECT 'x\' , $$' ; SELECT pg_advisory_lock(1); -- $$
SELECT E'x\' , $$' ; DELETE FROM items; -- $$
SELECT E'x\\' ; DELETE FROM items; -- '
SELECT 'x\\' ; DELETE FROM items; -- '
SELECT E'ā\' ; DELETE FROM items; -- '
SELECT 'ā\' ; DELETE FROM items; -- '
SELECT E'丁\' ; DELETE FROM items; -- '
SELECT U&'\0041' ; DELETE FROM items; -- '
SELECT $a$ $$ $a$ ; DELETE FROM items; -- $$
SELECT $$ '$$ ; DELETE FROM items; -- '
SELECT 1 /* /* */ ; DELETE FROM items; -- */
SELECT 1 /* a */ ; DELETE FROM items
SELECT 1 -- ; DELETE FROM items
SELECT "a\" FROM (SELECT 1 AS "a\") s ; DELETE FROM items; -- "
SELECT 'a''b' ; DELETE FROM items
SELECT '\''; DELETE FROM items; -- '
SELECT E'\\''; DELETE FROM items; -- '
SELECT 1; SET standard_conforming_strings = off; SELECT 'x\' , $$' ; DELETE FROM items; -- $$
SELECT pg_sleep(0)
SELECT now(), lower('A'), pg_backend_pid(), version()
SELECT pg_size_pretty(pg_total_relation_size('items'))
EXPLAIN DELETE FROM items
EXPLAIN ANALYZE DELETE FROM items
COPY items TO STDOUT
DO $$ BEGIN DELETE FROM items; END $$
-- Bypasses found by probing the classifier: each of these changes something
EXPLAIN (ANALYSE) DELETE FROM items
SELECT (42::bigint).pg_advisory_lock
SELECT (7).pg_advisory_lock
SELECT query_to_xml(E'SELECT 1 /* \052/ , pg_advisory_lock(7) --*/', true, false, '')
