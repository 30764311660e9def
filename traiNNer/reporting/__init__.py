"""Reading back what a run left and drawing what its automations did."""
