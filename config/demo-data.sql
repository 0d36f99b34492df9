-- Demo rows for `make run`: a few accounts and users, with NULLs, exact decimals and non-ASCII text.
SET NAMES utf8mb4;
INSERT INTO acc (id, name, status, balance, credit_limit, created_at, notes) VALUES
    (1, 'Acme Logistics',        'active',    15234.5000, 50000.00, '2024-01-15 09:30:00', 'Key account'),
    (2, 'Borealis Energía',      'active',      -120.7500,  1000.00, '2024-02-01 14:05:12.250000', NULL),
    (3, 'Château Verte SARL',    'suspended',      0.0000,     NULL, '2024-03-20 08:00:00', 'Payment overdue since 2024-05'),
    (4, '東京データ株式会社',       'active',   987654.3210, 250000.00, '2024-04-02 23:59:59.999999', 'Tokyo office 🗼'),
    (5, 'Delta Ops Ltd',         'closed',         0.0100,     NULL, '2023-11-30 12:00:00', NULL);

INSERT INTO user (id, acc_id, login, full_name, email, role, password_hash, last_login, birthday) VALUES
    (1, 1, 'jdoe',    'Jane Doe',         'jane@acme.example',      'admin',  '$2b$12$demoDemoDemoDemoDemoDeOe4u1yN6cK8w1gXo3m9r5yV2Q', '2024-06-01 08:12:00', '1985-04-12'),
    (2, 1, 'rsmith',  'Robert Smith',     'robert@acme.example',    'viewer', NULL,                                                     NULL,                  NULL),
    (3, 2, 'lgarcia', 'Lucía García',     'lucia@borealis.example', 'editor', '$2b$12$demoDemoDemoDemoDemoDeXq8Zc0bP1nJ6sL2kT9vW4hR7A', '2024-06-02 17:45:30', '1990-11-03'),
    (4, 4, 'tyamada', '山田 太郎',          NULL,                     'viewer', NULL,                                                     '2024-05-28 06:00:00', NULL),
    (5, 3, 'mdupont', 'Marie Dupont 👩‍💼', 'marie@verte.example',    'viewer', NULL,                                                     NULL,                  '1978-02-28');
