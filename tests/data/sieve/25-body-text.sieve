require ["body", "fileinto"];
if body :text :contains "sale" { fileinto "Sales"; }
