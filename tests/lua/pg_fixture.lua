-- pg_fixture: a small schema holding every object kind the catalog and
-- schema modules handle (used by tests/lua/test_catalog.lua and
-- tests/integration/test_pg_schema.lua).  Not a test file itself.
local M = {}

M.sql = [[
CREATE EXTENSION hstore;
CREATE EXTENSION pgcrypto;
CREATE SCHEMA app;
COMMENT ON SCHEMA app IS 'the application';
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN app.posint AS integer NOT NULL DEFAULT 1 CONSTRAINT posint_check CHECK (VALUE > 0);
CREATE TYPE app.pair AS (a integer, b text);
CREATE TYPE app.floatrange AS RANGE (subtype = float8);

CREATE TABLE app.customers (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email text NOT NULL UNIQUE,
  mood app.mood DEFAULT 'ok',
  score app.posint,
  tags text[],
  attrs public.hstore,
  token bytea DEFAULT public.gen_random_bytes(4),
  email_upper text GENERATED ALWAYS AS (upper(email)) STORED
);
COMMENT ON TABLE app.customers IS 'people';
CREATE TABLE app.orders (
  id serial PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES app.customers (id) ON DELETE CASCADE,
  amount numeric(12,2) CHECK (amount >= 0),
  placed_at timestamptz NOT NULL DEFAULT now(),
  note text,
  span app.floatrange,
  extra app.pair
);
ALTER TABLE app.orders ADD CONSTRAINT orders_note_len CHECK (length(note) < 100) NOT VALID;
CREATE INDEX orders_customer_idx ON app.orders (customer_id);
CREATE INDEX orders_recent_idx ON app.orders (placed_at DESC) WHERE note IS NOT NULL;

CREATE TABLE app.events (
  id bigint NOT NULL,
  at date NOT NULL,
  customer_id bigint REFERENCES app.customers (id),
  payload jsonb,
  PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE INDEX events_payload_idx ON app.events USING gin (payload);

CREATE UNLOGGED TABLE app.cache (k text PRIMARY KEY, v text);
CREATE TABLE app.audit_log (at timestamptz DEFAULT now(), what text);
ALTER TABLE app.audit_log REPLICA IDENTITY FULL;

CREATE SEQUENCE app.invoice_no AS integer START 100 INCREMENT 5;
CREATE SEQUENCE app.ticket_seq;
CREATE TABLE app.tickets (no bigint DEFAULT nextval('app.ticket_seq') UNIQUE, title text);
ALTER SEQUENCE app.ticket_seq OWNED BY app.tickets.no;

CREATE VIEW app.big_orders AS SELECT id, amount FROM app.orders WHERE amount > 100;
CREATE MATERIALIZED VIEW app.order_totals AS
  SELECT customer_id, sum(amount) AS total FROM app.orders GROUP BY customer_id;
CREATE UNIQUE INDEX order_totals_customer ON app.order_totals (customer_id);

CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN NEW.placed_at := now(); RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE FUNCTION app.add(a integer, b integer DEFAULT 1) RETURNS integer
  LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE PROCEDURE app.archive(days integer) LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM app.audit_log WHERE at < now() - make_interval(days => days); END $$;
CREATE AGGREGATE app.total(integer) (sfunc = int4pl, stype = integer, initcond = '0');

ALTER TABLE app.customers ENABLE ROW LEVEL SECURITY;
CREATE POLICY customers_self ON app.customers FOR SELECT TO PUBLIC USING (email = CURRENT_USER);

CREATE TABLE public.plain (id integer PRIMARY KEY, label text);
]]

-- A little data, so sizes, last values and FK validation mean something.
M.data = [[
INSERT INTO app.customers (email, mood, score, tags, attrs)
  SELECT 'c' || g || '@example.com', 'happy', g, ARRAY['a', 'b'], 'k=>v'
    FROM generate_series(1, 50) g;
INSERT INTO app.orders (customer_id, amount, note)
  SELECT 1 + g % 50, g * 3.5, CASE WHEN g % 2 = 0 THEN 'n' || g END FROM generate_series(1, 200) g;
INSERT INTO app.events SELECT g, DATE '2024-06-01' + g, 1 + g % 50, '{"k": 1}' FROM generate_series(1, 300) g;
INSERT INTO app.tickets (title) SELECT 't' || g FROM generate_series(1, 7) g;
INSERT INTO app.audit_log (what) VALUES ('x'), ('y');
SELECT setval('app.invoice_no', 125);
REFRESH MATERIALIZED VIEW app.order_totals;
ANALYZE;
]]

-- The tables whose data the schema test copies (in FK-safe order).
M.data_tables = { "app.customers", "app.orders", "app.events", "app.tickets", "app.audit_log" }

return M
