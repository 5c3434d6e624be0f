-- Statements for the MySQL/MariaDB classifier oracle
-- (tests/classifier_oracle_mysql.rs), one per line; lines starting with `--`
-- are comments. Each runs on a real MariaDB in every session reading the
-- test knows (default, NO_BACKSLASH_ESCAPES, ANSI_QUOTES, SET NAMES gbk),
-- inside a read-only transaction that is rolled back. Whenever the server
-- tried to change something, jitgate's verdict must not be read or session.
SELECT 1
SELECT * FROM items WHERE id = 1
DELETE FROM items
UPDATE items SET name = 'x'
INSERT INTO items (name) VALUES ('x')
SELECT * FROM items FOR UPDATE
SELECT * FROM items LOCK IN SHARE MODE
CREATE TABLE stolen (x int)
SELECT GET_LOCK('jitgate-oracle', 0)
/*M! DELETE FROM items */
/*!DELETE FROM items */
/*!50000 DELETE FROM items */
/*M!100000 DELETE FROM items */
/*!999999 DELETE FROM items */
SELECT 1 /*M! , (SELECT GET_LOCK('x', 0)) */
SELECT /*!40001 SQL_NO_CACHE */ * FROM items
SELECT 'a\' ; DELETE FROM items; -- '
SELECT "a\" ; DELETE FROM items; -- "
SELECT 'a\\' ; DELETE FROM items; -- '
SELECT '丁\' ; DELETE FROM items; -- '
SELECT 'ā\' ; DELETE FROM items; -- '
SELECT `a\` FROM (SELECT 1 AS `a\`) s ; DELETE FROM items; -- `
SELECT 1 # ; DELETE FROM items
SELECT 1 -- ; DELETE FROM items
SELECT 1 --; DELETE FROM items
SELECT 1 /* ; */ ; DELETE FROM items
SELECT 1 /* /* */ ; DELETE FROM items; -- */
SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 'a\' ; DELETE FROM items; -- '
SET NAMES gbk; SELECT '丁\' ; DELETE FROM items; -- '
SELECT 'a' 'b' ; DELETE FROM items
SELECT _utf8mb4'a\' ; DELETE FROM items; -- '
SELECT N'a\' ; DELETE FROM items; -- '
SELECT x'41' ; DELETE FROM items
SELECT 1 INTO @v
SELECT name INTO OUTFILE '/tmp/jitgate-oracle-out' FROM items
DO GET_LOCK('jitgate-oracle', 0)
-- Bypasses found by probing the classifier: each of these changes something
SELECT 1 /*!50700 '*/ ; DELETE FROM items; #' */
SELECT 1 /*!99999 '*/ ; DELETE FROM items; #' */
SELECT 1--  FROM (SELECT 1 AS ` `) d; DELETE FROM items
