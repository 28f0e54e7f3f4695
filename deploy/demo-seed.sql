-- The demo target's data (deploy/compose.yaml runs it once, on the demo-db volume's first start).
-- Every value is made up: example.com addresses, 555 phone numbers, SSNs in the never-issued
-- 9xx range and the card networks' published test numbers.

CREATE TABLE customers (
    id          integer PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL,
    phone       text,
    ssn         text,
    card_number text,
    created_at  date NOT NULL DEFAULT current_date
);

INSERT INTO customers (id, name, email, phone, ssn, card_number) VALUES
    (1,  'Alice Example',   'alice@example.com',   '+1-202-555-0101', '900-12-3401', '4111111111111111'),
    (2,  'Bruno Sample',    'bruno@example.com',   '+1-202-555-0102', '900-12-3402', '5555555555554444'),
    (3,  'Chen Placeholder','chen@example.com',    '+1-202-555-0103', '900-12-3403', '378282246310005'),
    (4,  'Dana Fictional',  'dana@example.org',    '+1-202-555-0104', '900-12-3404', '6011111111111117'),
    (5,  'Emeka Testcase',  'emeka@example.org',   '+1-202-555-0105', '900-12-3405', '4012888888881881'),
    (6,  'Fatima Mock',     'fatima@example.net',  '+1-202-555-0106', '900-12-3406', '5105105105105100'),
    (7,  'Gustav Dummy',    'gustav@example.net',  '+1-202-555-0107', '900-12-3407', '4111111111111111'),
    (8,  'Hana Invented',   'hana@example.com',    '+1-202-555-0108', '900-12-3408', '371449635398431');

CREATE TABLE orders (
    id          integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    item        text NOT NULL,
    amount      numeric(10, 2) NOT NULL
);

INSERT INTO orders (id, customer_id, item, amount) VALUES
    (1, 1, 'notebook', 12.50),
    (2, 1, 'pen',       2.10),
    (3, 2, 'lamp',     31.00),
    (4, 4, 'chair',    89.99),
    (5, 7, 'desk',    240.00);
