-- demo_data.sql: a sample shop database for `make demo` (scripts/demo.sh).
--
-- A realistic schema touching what migrations trip over: partitioned
-- tables (range, with a default partition, and hash), enums, domains, a
-- composite type, arrays, jsonb, bytea, tsvector, generated and identity
-- columns, views, a materialized view, functions, triggers, foreign keys
-- (including one to a partitioned table), standalone and owned
-- sequences, a table without a primary key (REPLICA IDENTITY FULL), and
-- assorted indexes (GIN, trigram, partial, expression).  Data is
-- generated server-side.
--
--   psql -v scale=1 -f scripts/demo_data.sql     (scale 1: about 250 MB; 0.1 for tests)
\set ON_ERROR_STOP on
\if :{?scale}
\else
\set scale 1
\endif

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE SCHEMA shop;
SET search_path = shop, public;

CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped', 'delivered', 'cancelled');
CREATE DOMAIN email AS text CHECK (VALUE ~ '^[^@\s]+@[^@\s]+$');
CREATE DOMAIN money_amount AS numeric(12, 2) CHECK (VALUE >= 0);
CREATE TYPE address AS (street text, city text, zip text, country char(2));

CREATE SEQUENCE invoice_number_seq START 100000;

CREATE TABLE customers (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email email NOT NULL UNIQUE,
  name text NOT NULL,
  address address,
  tags text[] NOT NULL DEFAULT '{}',
  prefs jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz,
  search tsvector GENERATED ALWAYS AS (to_tsvector('simple', name || ' ' || email)) STORED
);

CREATE TABLE products (
  id serial PRIMARY KEY,
  sku text NOT NULL UNIQUE,
  name text NOT NULL,
  description text,
  price money_amount NOT NULL,
  attributes jsonb,
  thumbnail bytea,
  discontinued boolean NOT NULL DEFAULT false
);

CREATE TABLE orders (
  id bigint NOT NULL,
  created_at timestamptz NOT NULL,
  customer_id bigint NOT NULL REFERENCES customers (id),
  status order_status NOT NULL DEFAULT 'new',
  total money_amount NOT NULL DEFAULT 0,
  shipping address,
  invoice_number bigint,
  PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE SEQUENCE orders_id_seq OWNED BY orders.id;
ALTER TABLE orders ALTER COLUMN id SET DEFAULT nextval('orders_id_seq');
CREATE TABLE orders_2024_q1 PARTITION OF orders FOR VALUES FROM ('2024-01-01') TO ('2024-04-01');
CREATE TABLE orders_2024_q2 PARTITION OF orders FOR VALUES FROM ('2024-04-01') TO ('2024-07-01');
CREATE TABLE orders_2024_q3 PARTITION OF orders FOR VALUES FROM ('2024-07-01') TO ('2024-10-01');
CREATE TABLE orders_2024_q4 PARTITION OF orders FOR VALUES FROM ('2024-10-01') TO ('2025-01-01');
CREATE TABLE orders_default PARTITION OF orders DEFAULT;

CREATE TABLE order_items (
  order_id bigint NOT NULL,
  order_created_at timestamptz NOT NULL,
  line_no int NOT NULL,
  product_id int NOT NULL REFERENCES products (id),
  quantity int NOT NULL CHECK (quantity > 0),
  unit_price money_amount NOT NULL,
  amount numeric(12, 2) GENERATED ALWAYS AS (quantity * unit_price) STORED,
  PRIMARY KEY (order_id, line_no),
  FOREIGN KEY (order_id, order_created_at) REFERENCES orders (id, created_at)
);

-- an append-only log without a primary key, hash-partitioned
CREATE TABLE audit_log (
  at timestamptz NOT NULL DEFAULT now(),
  actor text,
  action text NOT NULL,
  payload jsonb
) PARTITION BY HASH (action);
CREATE TABLE audit_log_0 PARTITION OF audit_log FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE audit_log_1 PARTITION OF audit_log FOR VALUES WITH (MODULUS 2, REMAINDER 1);
-- no key: logical replication identifies its rows by all their values
-- (without this the source refuses UPDATE/DELETE once it is published,
-- and pgtide's preflight refuses the table for CDC)
ALTER TABLE audit_log_0 REPLICA IDENTITY FULL;
ALTER TABLE audit_log_1 REPLICA IDENTITY FULL;

CREATE TABLE reviews (
  id bigserial PRIMARY KEY,
  product_id int NOT NULL REFERENCES products (id) ON DELETE CASCADE,
  customer_id bigint REFERENCES customers (id) ON DELETE SET NULL,
  rating smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
  body text,
  body_tsv tsvector,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- {==================================================== data
INSERT INTO customers (email, name, address, tags, prefs, created_at)
SELECT 'user' || g || '@example.com', 'Customer ' || g || ' ' || md5(g::text),
       ROW(g || ' Main St', (ARRAY['Lisbon', 'Berlin', 'Austin', 'Osaka', 'Lagos'])[1 + g % 5],
           lpad((g % 99999)::text, 5, '0'), (ARRAY['PT', 'DE', 'US', 'JP', 'NG'])[1 + g % 5])::address,
       CASE WHEN g % 3 = 0 THEN ARRAY['vip', 'newsletter'] WHEN g % 3 = 1 THEN ARRAY['newsletter'] ELSE '{}' END,
       jsonb_build_object('lang', (ARRAY['en', 'pt', 'de', 'ja'])[1 + g % 4], 'marketing', g % 2 = 0,
                          'sizes', jsonb_build_array(g % 7, g % 11)),
       timestamptz '2023-01-01' + (g * interval '37 seconds')
FROM generate_series(1, (100000 * :scale)::int) g;

INSERT INTO products (sku, name, description, price, attributes, thumbnail, discontinued)
SELECT 'SKU-' || lpad(g::text, 7, '0'), 'Product ' || g || ' ' || substr(md5(g::text), 1, 8),
       repeat('A fine product with many words. ', 1 + g % 8),
       round((1 + (g % 5000) / 7.0)::numeric, 2),
       jsonb_build_object('color', (ARRAY['red', 'green', 'blue'])[1 + g % 3], 'weight_g', g % 2000,
                          'dims', jsonb_build_object('w', g % 50, 'h', g % 30)),
       decode(repeat(md5(g::text), 64), 'hex'),
       g % 50 = 0
FROM generate_series(1, (20000 * :scale)::int) g;

INSERT INTO orders (id, created_at, customer_id, status, total, shipping, invoice_number)
SELECT g, timestamptz '2024-01-01' + g * interval '86 seconds',
       1 + (g::int8 * 7919) % ((100000 * :scale)::int),
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + g % 5]::order_status,
       0, CASE WHEN g % 4 = 0 THEN NULL ELSE ROW(g || ' Side St', 'Porto', '4000', 'PT')::address END,
       CASE WHEN g % 5 IN (1, 2, 3) THEN nextval('invoice_number_seq') END
FROM generate_series(1, (400000 * :scale)::int) g;
SELECT setval('orders_id_seq', (400000 * :scale)::int);

INSERT INTO order_items (order_id, order_created_at, line_no, product_id, quantity, unit_price)
SELECT o.id, o.created_at, l, 1 + (o.id * 31 + l * 17) % ((20000 * :scale)::int), 1 + (o.id + l) % 4,
       round((1 + ((o.id + l) % 5000) / 7.0)::numeric, 2)
FROM orders o, generate_series(1, 1 + (o.id % 3)::int) l;

UPDATE orders o SET total = s.total
  FROM (SELECT order_id, sum(amount) AS total FROM order_items GROUP BY order_id) s
 WHERE s.order_id = o.id;

INSERT INTO audit_log (at, actor, action, payload)
SELECT timestamptz '2024-01-01' + g * interval '11 seconds', 'user' || (g % 1000),
       (ARRAY['login', 'logout', 'order', 'refund', 'review'])[1 + g % 5],
       jsonb_build_object('ip', '10.' || (g % 256) || '.' || (g / 256 % 256) || '.1', 'ok', g % 9 <> 0,
                          'detail', repeat('x', g % 300))
FROM generate_series(1, (300000 * :scale)::int) g;

INSERT INTO reviews (product_id, customer_id, rating, body, created_at)
SELECT 1 + g % ((20000 * :scale)::int), CASE WHEN g % 10 = 0 THEN NULL ELSE 1 + g % ((100000 * :scale)::int) END,
       1 + g % 5, 'Review ' || g || ': ' || repeat('great value, would buy again. ', 1 + g % 4),
       timestamptz '2024-02-01' + g * interval '1 minute'
FROM generate_series(1, (60000 * :scale)::int) g;
UPDATE reviews SET body_tsv = to_tsvector('english', body);
-- }====================================================

-- {==================================================== code
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;
CREATE TRIGGER customers_touch BEFORE UPDATE ON customers
  FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE FUNCTION reviews_tsv() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.body_tsv := to_tsvector('english', coalesce(NEW.body, ''));
  RETURN NEW;
END $$;
CREATE TRIGGER reviews_tsv BEFORE INSERT OR UPDATE OF body ON reviews
  FOR EACH ROW EXECUTE FUNCTION reviews_tsv();

CREATE FUNCTION log_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO shop.audit_log (actor, action, payload)
  VALUES (current_user, 'order', jsonb_build_object('order_id', NEW.id, 'status', NEW.status));
  RETURN NULL;
END $$;
CREATE TRIGGER orders_log AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION log_order();

CREATE FUNCTION order_total(p_order bigint) RETURNS numeric LANGUAGE sql STABLE AS $$
  SELECT coalesce(sum(amount), 0) FROM shop.order_items WHERE order_id = p_order
$$;

CREATE PROCEDURE cancel_order(p_order bigint) LANGUAGE plpgsql AS $$
BEGIN
  UPDATE shop.orders SET status = 'cancelled' WHERE id = p_order;
END $$;

CREATE VIEW customer_order_totals AS
  SELECT c.id, c.email, count(o.id) AS orders, coalesce(sum(o.total), 0) AS spent
    FROM customers c LEFT JOIN orders o ON o.customer_id = c.id
   GROUP BY c.id, c.email;

CREATE MATERIALIZED VIEW daily_sales AS
  SELECT date_trunc('day', created_at) AS day, count(*) AS orders, sum(total) AS revenue
    FROM orders WHERE status <> 'cancelled'
   GROUP BY 1;
CREATE UNIQUE INDEX daily_sales_day ON daily_sales (day);
-- }====================================================

-- {==================================================== indexes
CREATE INDEX customers_prefs ON customers USING gin (prefs jsonb_path_ops);
CREATE INDEX customers_search ON customers USING gin (search);
CREATE INDEX customers_city ON customers (((address).city));
CREATE INDEX products_name_trgm ON products USING gin (name gin_trgm_ops);
CREATE INDEX products_active ON products (price) WHERE NOT discontinued;
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_status_created ON orders (status, created_at);
CREATE INDEX order_items_product ON order_items (product_id);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX reviews_product ON reviews (product_id, rating);
CREATE INDEX reviews_tsv_idx ON reviews USING gin (body_tsv);
-- }====================================================

ANALYZE;
