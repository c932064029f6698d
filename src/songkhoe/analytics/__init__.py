"""Population analytics: SQL-on-FHIR v2 ViewDefinitions
(https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/), their DuckDB and Spark runners, the Parquet
warehouse and the programme indicators (issue 7)."""
